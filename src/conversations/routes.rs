//! The members' inbox: list and filter conversations, read a thread, reply or note, assign,
//! take over from the AI and hand back, snooze, resolve, reopen, label, and follow live
//! updates. Every mutation is audited with before and after (AUD-1).

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{fetch, fetch_message, Channel, ConversationView, Handler, MessageView, Status};
use crate::audit::{self, AuditEvent};
use crate::auth::revocation::Held;
use crate::auth::{AuthState, Credential, Ctx};
use crate::crm::accounts::like_pattern;
use crate::crm::page_limit;
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::events::{self, Cap, Event, Holder};
use crate::guardrails::Lang;
use crate::http::contract::NOT_BLANK;
use crate::http::{Access, Api, Contract, Json, Page, Path, Query};
use crate::queue::{self, NewJob};
use crate::rbac::Permission;
use utoipa::{IntoParams, ToSchema};

/// Whether a free-form message may go to a customer on `channel` now, who last wrote at
/// `last_inbound_at` (WhatsApp's 24-hour service window). The channels know their rules and
/// rank above conversations, so `app.rs` hands the answer down.
pub type FreeFormOpen =
    fn(channel: Channel, last_inbound_at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool;

pub fn routes<S>(api: Api<S>, free_form_open: FreeFormOpen) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
    AuthState: FromRef<S>,
    events::Live: FromRef<S>,
{
    use Access::*;
    use Permission::*;
    api.endpoint(
        Method::GET,
        "/api/v1/conversations",
        Requires(ConversationsRead),
        ("inbox", "List conversations with filters"),
        Contract::new().query::<ListQuery>().ok_page::<ConversationView>().error(StatusCode::BAD_REQUEST, "invalid_limit").error(StatusCode::BAD_REQUEST, "invalid_filter").error(StatusCode::BAD_REQUEST, "invalid_cursor"),
        list,
    )
    .endpoint(
        Method::GET,
        "/api/v1/conversations/{conversation_id}",
        Requires(ConversationsRead),
        ("inbox", "Show a conversation"),
        Contract::new().ok::<ConversationDetail>(),
        show,
    )
    .endpoint(
        Method::GET,
        "/api/v1/conversations/{conversation_id}/messages",
        Requires(ConversationsRead),
        ("inbox", "Read a conversation's thread"),
        Contract::new().query::<ThreadQuery>().ok_page::<MessageView>().error(StatusCode::BAD_REQUEST, "invalid_limit"),
        thread,
    )
    .endpoint(
        Method::POST,
        "/api/v1/conversations/{conversation_id}/messages",
        Requires(ConversationsReply),
        ("inbox", "Reply through the channel, or add a private note"),
        Contract::new()
            .body::<ReplyBody>()
            // A text, or a template; a note is never a template.
            .body_rule(serde_json::json!({
                "anyOf": [
                    { "required": ["body"], "properties": { "body": { "type": "string", "pattern": NOT_BLANK } } },
                    { "required": ["template"], "properties": { "template": { "type": "object" } } }
                ],
                "not": {
                    "required": ["private", "template"],
                    "properties": { "private": { "const": true }, "template": { "type": "object" } }
                }
            }))
            .created::<MessageView>()
            .error(StatusCode::BAD_REQUEST, "invalid_message")
            .error(StatusCode::CONFLICT, "outside_service_window"),
        move |db: State<Db>, ctx: Ctx, id: Path<Uuid>, body: Json<ReplyBody>| {
            reply(db, ctx, id, body, free_form_open)
        },
    )
    .endpoint(
        Method::POST,
        "/api/v1/conversations/{conversation_id}/assign",
        Requires(ConversationsManage),
        ("inbox", "Assign or unassign"),
        Contract::new().body::<AssignBody>().ok::<ConversationView>().error(StatusCode::BAD_REQUEST, "invalid_assignee"),
        assign,
    )
    .endpoint(
        Method::POST,
        "/api/v1/conversations/{conversation_id}/takeover",
        Requires(ConversationsManage),
        ("inbox", "Take the conversation over from the AI"),
        Contract::new().ok::<ConversationView>(),
        takeover,
    )
    .endpoint(
        Method::POST,
        "/api/v1/conversations/{conversation_id}/handback",
        Requires(ConversationsManage),
        ("inbox", "Hand the conversation back to the AI"),
        Contract::new().ok::<ConversationView>(),
        handback,
    )
    .endpoint(
        Method::POST,
        "/api/v1/conversations/{conversation_id}/status",
        Requires(ConversationsManage),
        ("inbox", "Open, mark pending, snooze or resolve"),
        Contract::new()
            .body::<StatusBody>()
            // A snooze has its end (in the future); nothing else has one.
            .body_rule(serde_json::json!({
                "anyOf": [
                    {
                        "required": ["snoozed_until"],
                        "properties": {
                            "status": { "const": "snoozed" },
                            "snoozed_until": { "type": "string", "format": "date-time" }
                        }
                    },
                    {
                        "properties": {
                            "status": { "enum": ["open", "pending", "resolved"] },
                            "snoozed_until": { "type": "null" }
                        }
                    }
                ]
            }))
            .ok::<ConversationView>().error(StatusCode::BAD_REQUEST, "invalid_status").error(StatusCode::BAD_REQUEST, "invalid_snooze"),
        set_status,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/conversations/{conversation_id}/labels",
        Requires(ConversationsManage),
        ("inbox", "Replace the labels"),
        Contract::new().body::<LabelsBody>().ok::<ConversationView>().error(StatusCode::BAD_REQUEST, "invalid_labels"),
        set_labels,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/conversations/{conversation_id}/language",
        Requires(ConversationsManage),
        (
            "inbox",
            "Set the customer's language, or null to detect it again",
        ),
        Contract::new().body::<LanguageBody>().ok::<ConversationView>().error(StatusCode::BAD_REQUEST, "invalid_language"),
        set_language,
    )
    .endpoint(
        Method::GET,
        "/api/v1/events",
        Requires(ConversationsRead),
        ("inbox", "Live updates (server-sent events)"),
        Contract::new().returns_media(StatusCode::OK, "text/event-stream", "Server-sent events: the tenant's new messages, delivery states, status and assignment changes, while the credential holds").error(StatusCode::TOO_MANY_REQUESTS, "too_many_streams"),
        live,
    )
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// A member id, `me`, or `none`.
    #[param(schema_with = assignee_schema)]
    assignee: Option<String>,
    #[param(value_type = Option<Handler>)]
    handler: Option<String>,
    inbox_id: Option<Uuid>,
    #[param(value_type = Option<Channel>)]
    channel: Option<String>,
    label: Option<String>,
    /// Text in the contact's name, email or phone, or in a message.
    q: Option<String>,
    /// The previous page's `next_cursor`.
    #[param(
        pattern = "^-?[0-9]{1,19}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    cursor: Option<String>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

fn assignee_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::contract::schema(serde_json::json!({
        "anyOf": [
            { "type": "string", "format": "uuid" },
            { "type": "string", "enum": ["me", "none"] }
        ]
    }))
}

/// A page's end: the last conversation's activity time (Unix nanoseconds) and id, as
/// `{nanos}_{id}`; the pattern of `ListQuery::cursor` says which texts are cursors.
fn encode_cursor(c: &ConversationView) -> String {
    format!("{}_{}", c.last_message_at.unix_timestamp_nanos(), c.id)
}

fn decode_cursor(raw: &str) -> Result<(OffsetDateTime, Uuid)> {
    let bad = || Error::bad_request("invalid_cursor", "the cursor is not one this API gave out");
    let (nanos, id) = raw.split_once('_').ok_or_else(bad)?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().map_err(|_| bad())?)
        .map_err(|_| bad())?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// A filter's value, one of a closed set (named by `name`), or a 400 that lists them.
fn one_of<T: Copy>(
    field: &str,
    value: &Option<String>,
    allowed: &[T],
    name: fn(T) -> &'static str,
) -> Result<Option<T>> {
    let Some(value) = value else { return Ok(None) };
    match allowed.iter().find(|a| name(**a) == value) {
        Some(found) => Ok(Some(*found)),
        None => Err(Error::bad_request(
            "invalid_filter",
            format!(
                "{field} must be one of {}",
                allowed
                    .iter()
                    .map(|a| name(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

async fn list(
    State(state): State<Db>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<ConversationView, String>>> {
    let limit = page_limit(q.limit)?;
    let status = one_of("status", &q.status, &Status::ALL, Status::as_str)?;
    let handler = one_of("handler", &q.handler, &Handler::ALL, Handler::as_str)?;
    let channel = one_of("channel", &q.channel, &Channel::ALL, Channel::as_str)?;
    let (unassigned, assignee) = match q.assignee.as_deref() {
        None => (false, None),
        Some("none") => (true, None),
        Some("me") => (false, Some(ctx.member_id)),
        Some(id) => (
            false,
            Some(Uuid::parse_str(id).map_err(|_| {
                Error::bad_request("invalid_filter", "assignee must be a member id, me or none")
            })?),
        ),
    };
    let (after_at, after_id) = match q.cursor.as_deref().map(decode_cursor).transpose()? {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    let pattern = q.q.as_deref().map(like_pattern);
    let mut tx = ctx.begin(&state).await?;
    // Newest activity first. The index holds the activity time in ten-second steps (see
    // migration 0008); ordering by step, then exact time, is ordering by exact time.
    let items = sqlx::query_as!(
        ConversationView,
        r#"SELECT c.id, c.inbox_id, c.contact_id, i.channel AS "channel: Channel", c.status AS "status: Status",
                c.handler AS "handler: Handler", c.assignee_id, c.labels,
                c.language, c.language_set_by_member, c.snoozed_until, c.last_message_at, c.last_inbound_at, c.created_at, c.updated_at
         FROM conversation c
         JOIN inbox i ON i.id = c.inbox_id
         JOIN contact p ON p.id = c.contact_id
         WHERE c.tenant_id = $1
           AND ($2::text IS NULL OR c.status = $2)
           AND (NOT $3 OR c.assignee_id IS NULL)
           AND ($4::uuid IS NULL OR c.assignee_id = $4)
           AND ($5::text IS NULL OR c.handler = $5)
           AND ($6::uuid IS NULL OR c.inbox_id = $6)
           AND ($7::text IS NULL OR i.channel = $7)
           AND ($8::text IS NULL OR $8 = ANY (c.labels))
           AND ($9::text IS NULL OR p.name ILIKE $9 OR p.email ILIKE $9 OR p.phone ILIKE $9
                OR EXISTS (SELECT 1 FROM message m WHERE m.conversation_id = c.id AND m.body ILIKE $9))
           AND ($10::timestamptz IS NULL
                OR (c.activity_step <= activity_step($10) AND (c.last_message_at, c.id) < ($10, $11)))
         ORDER BY c.activity_step DESC, c.last_message_at DESC, c.id DESC
         LIMIT $12"#,
        ctx.tenant_id,
        status.map(Status::as_str),
        unassigned,
        assignee,
        handler.map(Handler::as_str),
        q.inbox_id,
        channel.map(Channel::as_str),
        q.label,
        pattern,
        after_at,
        after_id,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(Page::new(items, limit, encode_cursor)))
}

/// A conversation and the contact it is with.
#[derive(serde::Serialize, ToSchema)]
struct ConversationDetail {
    conversation: ConversationView,
    contact: crate::crm::contacts::ContactView,
}

async fn show(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ConversationDetail>> {
    let mut tx = ctx.begin(&state).await?;
    let conversation = fetch(&mut tx, id).await?;
    let contact = crate::crm::contacts::fetch(&mut tx, conversation.contact_id).await?;
    tx.commit().await?;
    Ok(Json(ConversationDetail {
        conversation,
        contact,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ThreadQuery {
    /// The last message id of the previous page (its `next_cursor`).
    after: Option<Uuid>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

async fn thread(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Query(q): Query<ThreadQuery>,
) -> Result<Json<Page<MessageView>>> {
    let limit = page_limit(q.limit)?;
    let mut tx = ctx.begin(&state).await?;
    fetch(&mut tx, id).await?;
    let items = sqlx::query_as!(
        MessageView,
        "SELECT id, conversation_id, direction, author_kind, author_id, content_type, body, attachments,
                private, provider_message_id, delivery_status, delivery_error, provider_timestamp,
                created_at, sent_at, delivered_at, read_at, failed_at
         FROM message
         WHERE conversation_id = $1 AND tenant_id = current_tenant_id() AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3",
        id,
        q.after,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(Page::new(items, limit, |m| m.id)))
}

/// A reply (`body`), a private note (`body` and `private`), or a WhatsApp template.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    /// Required unless a template is sent; trimmed.
    #[schema(max_length = 4096)]
    pub body: Option<String>,
    /// A note for the members only, never sent to the customer.
    #[serde(default)]
    pub private: bool,
    /// A WhatsApp message template, the only thing that may go outside the 24-hour window.
    pub template: Option<Template>,
}

#[derive(Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The template's name as approved in WhatsApp Business.
    pub name: String,
    /// Its language code, e.g. `en_US`.
    pub language: String,
    /// Free-form: the template's components (parameters), as WhatsApp's Cloud API takes them.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub components: Value,
}

async fn reply(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<ReplyBody>,
    free_form_open: FreeFormOpen,
) -> Result<(StatusCode, Json<MessageView>)> {
    let mut tx = ctx.begin(&state).await?;
    let conversation = fetch(&mut tx, id).await?;
    let message = send_reply(&mut tx, &ctx, &conversation, &body, free_form_open).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(message)))
}

/// A member's reply to the customer through the conversation's channel, or their private note,
/// on the caller's transaction: stored, queued for delivery, audited, announced, and (a reply)
/// taking the conversation over from the AI. The API and the web app both reply through here.
pub async fn send_reply(
    tx: &mut Tx,
    ctx: &Ctx,
    conversation: &ConversationView,
    body: &ReplyBody,
    free_form_open: FreeFormOpen,
) -> Result<MessageView> {
    let id = conversation.id;
    let text = body
        .body
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if body.template.is_some() && body.private {
        return Err(Error::bad_request(
            "invalid_message",
            "a note cannot be a template",
        ));
    }
    if text.is_empty() && body.template.is_none() {
        return Err(Error::bad_request("invalid_message", "body is required"));
    }
    if text.chars().count() > 4096 {
        return Err(Error::bad_request(
            "invalid_message",
            "body is limited to 4096 characters",
        ));
    }
    let open = free_form_open(
        conversation.channel,
        conversation.last_inbound_at,
        OffsetDateTime::now_utc(),
    );
    if !body.private && !open && body.template.is_none() {
        return Err(Error::conflict(
            "outside_service_window",
            "the customer wrote more than 24 hours ago: only a WhatsApp template may be sent",
        ));
    }
    let (content_type, attachments, status) =
        match (&body.template, body.private, conversation.channel) {
            (_, true, _) => ("text", json!([]), None),
            (Some(t), _, _) => ("template", json!([{ "template": t }]), Some("queued")),
            // Web chat visitors receive replies over their live stream: nothing to hand off.
            (None, _, Channel::Webchat) => ("text", json!([]), Some("sent")),
            (None, _, _) => ("text", json!([]), Some("queued")),
        };
    let message_id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO message (id, tenant_id, conversation_id, inbox_id, direction, author_kind, author_id,
                              content_type, body, attachments, private, delivery_status, sent_at)
         VALUES ($1, $2, $3, $4, 'outbound', 'member', $5, $6, $7, $8, $9, $10,
                 CASE WHEN $10 = 'sent' THEN now() END)",
        message_id,
        ctx.tenant_id,
        id,
        conversation.inbox_id,
        ctx.member_id,
        content_type,
        text,
        attachments,
        body.private,
        status
    )
    .execute(&mut **tx)
    .await?;
    if status == Some("queued") {
        queue::enqueue(
            tx,
            ctx.tenant_id,
            NewJob::new(
                super::SEND_MESSAGE,
                format!("send:{message_id}"),
                json!({ "message_id": message_id }),
            ),
        )
        .await?;
    }
    if !body.private {
        sqlx::query!(
            "UPDATE conversation SET last_message_at = now(), updated_at = now() WHERE id = $1",
            id
        )
        .execute(&mut **tx)
        .await?;
    }
    let message = fetch_message(tx, message_id).await?;
    let source = ctx.audit_source();
    let action = if body.private {
        "note.created"
    } else {
        "message.created"
    };
    audit::record(
        tx,
        &source,
        AuditEvent::new(action, "message", message_id).after(&message),
    )
    .await?;
    // A member answering the customer takes the conversation over from the AI.
    if !body.private && conversation.handler == Handler::Ai {
        set_handler(tx, ctx, conversation, Handler::Human, "member replied").await?;
    }
    events::publish(
        tx,
        &Event {
            tenant_id: ctx.tenant_id,
            kind: "message.created".into(),
            conversation_id: Some(id),
            message_id: Some(message_id),
            // Who the message is for, so a visitor's stream passes over everyone else's
            // replies without a lookup.
            data: json!({ "direction": "outbound", "private": body.private,
                          "contact_id": conversation.contact_id, "inbox_id": conversation.inbox_id }),
        },
    )
    .await?;
    Ok(message)
}

/// Records a conversation change: audit with before and after, and a live event.
async fn changed(
    tx: &mut Tx,
    ctx: &Ctx,
    action: &'static str,
    before: &ConversationView,
) -> Result<ConversationView> {
    let after = fetch(tx, before.id).await?;
    ctx.audit(
        tx,
        AuditEvent::new(action, "conversation", before.id)
            .before(before)
            .after(&after),
    )
    .await?;
    events::publish(tx, &Event {
        tenant_id: ctx.tenant_id,
        kind: "conversation.updated".into(),
        conversation_id: Some(before.id),
        message_id: None,
        data: json!({ "action": action, "status": after.status, "handler": after.handler, "assignee_id": after.assignee_id }),
    })
    .await?;
    Ok(after)
}

async fn set_handler(
    tx: &mut Tx,
    ctx: &Ctx,
    before: &ConversationView,
    handler: Handler,
    reason: &str,
) -> Result<ConversationView> {
    sqlx::query!(
        "UPDATE conversation SET handler = $2, updated_at = now() WHERE id = $1 AND tenant_id = current_tenant_id()",
        before.id,
        handler.as_str()
    )
    .execute(&mut **tx)
    .await?;
    let action = if handler == Handler::Human {
        "conversation.taken_over"
    } else {
        "conversation.handed_back"
    };
    let after = changed(tx, ctx, action, before).await?;
    tracing::info!(conversation_id = %before.id, handler = handler.as_str(), reason, "conversation handler changed");
    Ok(after)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    /// An active staff member; absent or null unassigns.
    assignee_id: Option<Uuid>,
}

async fn assign(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<AssignBody>,
) -> Result<Json<ConversationView>> {
    assign_to(&state, &ctx, id, body.assignee_id)
        .await
        .map(Json)
}

/// Assigns the conversation to an active staff member, or to nobody (`None`).
pub async fn assign_to(
    state: &Db,
    ctx: &Ctx,
    id: Uuid,
    assignee_id: Option<Uuid>,
) -> Result<ConversationView> {
    let mut tx = ctx.begin(state).await?;
    let before = fetch(&mut tx, id).await?;
    if let Some(assignee) = assignee_id {
        // Another tenant's member answers 404, like any foreign id (SEC-3).
        let member = crate::tenants::members::fetch(&mut tx, assignee).await?;
        if member.status != "active" || member.role == "partner" {
            return Err(Error::bad_request(
                "invalid_assignee",
                "only active staff can be assigned",
            ));
        }
    }
    sqlx::query!(
        "UPDATE conversation SET assignee_id = $2, updated_at = now() WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        assignee_id
    )
    .execute(&mut *tx)
    .await?;
    let after = changed(&mut tx, ctx, "conversation.assigned", &before).await?;
    tx.commit().await?;
    Ok(after)
}

async fn takeover(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ConversationView>> {
    hand_to(&state, &ctx, id, Handler::Human).await.map(Json)
}

async fn handback(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ConversationView>> {
    hand_to(&state, &ctx, id, Handler::Ai).await.map(Json)
}

/// Takes the conversation over from the AI (`Human`), or hands it back (`Ai`).
pub async fn hand_to(
    state: &Db,
    ctx: &Ctx,
    id: Uuid,
    handler: Handler,
) -> Result<ConversationView> {
    let reason = match handler {
        Handler::Human => "taken over",
        Handler::Ai => "handed back",
    };
    let mut tx = ctx.begin(state).await?;
    let before = fetch(&mut tx, id).await?;
    let after = set_handler(&mut tx, ctx, &before, handler, reason).await?;
    tx.commit().await?;
    Ok(after)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    #[schema(value_type = Status)]
    status: String,
    /// In the future; with status `snoozed` only, and required with it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    snoozed_until: Option<OffsetDateTime>,
}

async fn set_status(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<StatusBody>,
) -> Result<Json<ConversationView>> {
    change_status(&state, &ctx, id, &body.status, body.snoozed_until)
        .await
        .map(Json)
}

/// Opens, marks pending, snoozes (until a time in the future) or resolves the conversation.
pub async fn change_status(
    state: &Db,
    ctx: &Ctx,
    id: Uuid,
    status: &str,
    snoozed_until: Option<OffsetDateTime>,
) -> Result<ConversationView> {
    let status = Status::ALL
        .into_iter()
        .find(|s| s.as_str() == status)
        .ok_or_else(|| {
            Error::bad_request(
                "invalid_status",
                "status must be open, pending, snoozed or resolved",
            )
        })?;
    let snoozed_until = match (status, snoozed_until) {
        (Status::Snoozed, Some(until)) if until > OffsetDateTime::now_utc() => Some(until),
        (Status::Snoozed, _) => {
            return Err(Error::bad_request(
                "invalid_snooze",
                "snoozing needs a snoozed_until in the future",
            ))
        }
        (_, None) => None,
        (_, Some(_)) => {
            return Err(Error::bad_request(
                "invalid_snooze",
                "snoozed_until goes only with status snoozed",
            ))
        }
    };
    let mut tx = ctx.begin(state).await?;
    let before = fetch(&mut tx, id).await?;
    sqlx::query!(
        "UPDATE conversation SET status = $2, snoozed_until = $3, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        status.as_str(),
        snoozed_until
    )
    .execute(&mut *tx)
    .await?;
    let after = changed(&mut tx, ctx, "conversation.status_changed", &before).await?;
    tx.commit().await?;
    Ok(after)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LabelsBody {
    /// At most 20, each 1 to 50 characters (trimmed, then lowercased).
    #[schema(schema_with = labels_schema)]
    labels: Vec<String>,
}

fn labels_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::contract::schema(serde_json::json!({
        "type": "array",
        "maxItems": 20,
        "items": { "type": "string", "maxLength": 50, "pattern": NOT_BLANK }
    }))
}

async fn set_labels(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<LabelsBody>,
) -> Result<Json<ConversationView>> {
    replace_labels(&state, &ctx, id, &body.labels)
        .await
        .map(Json)
}

/// Replaces the conversation's labels: at most 20, each 1 to 50 characters, trimmed and
/// lowercased, duplicates dropped.
pub async fn replace_labels(
    state: &Db,
    ctx: &Ctx,
    id: Uuid,
    labels: &[String],
) -> Result<ConversationView> {
    // Counted as written: lowercasing may lengthen a text (`İ` becomes two characters).
    if labels.len() > 20
        || labels.iter().any(|l| {
            let l = l.trim();
            l.is_empty() || l.chars().count() > 50
        })
    {
        return Err(Error::bad_request(
            "invalid_labels",
            "up to 20 labels of 1 to 50 characters",
        ));
    }
    let mut labels: Vec<String> = labels.iter().map(|l| l.trim().to_lowercase()).collect();
    labels.sort();
    labels.dedup();
    let mut tx = ctx.begin(state).await?;
    let before = fetch(&mut tx, id).await?;
    sqlx::query!(
        "UPDATE conversation SET labels = $2, updated_at = now() WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        &labels
    )
    .execute(&mut *tx)
    .await?;
    let after = changed(&mut tx, ctx, "conversation.labels_changed", &before).await?;
    tx.commit().await?;
    Ok(after)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LanguageBody {
    /// `en`, `pt`, `es` or `de` (regional variants such as `pt-BR` accepted), or null.
    #[schema(schema_with = language_schema, required = true)]
    language: Value,
}

/// What `Lang::from_code` takes: a code whose part before the first `-` or `_` is one of ours.
fn language_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::contract::schema(serde_json::json!({
        "type": ["string", "null"],
        "pattern": "^([Ee][Nn]|[Pp][Tt]|[Ee][Ss]|[Dd][Ee])([-_][^\\u0000]*)?$"
    }))
}

async fn set_language(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<LanguageBody>,
) -> Result<Json<ConversationView>> {
    let invalid = || {
        Error::bad_request(
            "invalid_language",
            "language is one of en, pt, es, de, or null to detect it from the customer's messages",
        )
    };
    let language = match &body.language {
        Value::Null => None,
        Value::String(code) => Some(Lang::from_code(code).ok_or_else(invalid)?),
        _ => return Err(invalid()),
    };
    choose_language(&state, &ctx, id, language).await.map(Json)
}

/// Sets the customer's language, or (`None`) hands it back to detection from their messages.
pub async fn choose_language(
    state: &Db,
    ctx: &Ctx,
    id: Uuid,
    language: Option<Lang>,
) -> Result<ConversationView> {
    let mut tx = ctx.begin(state).await?;
    let before = fetch(&mut tx, id).await?;
    // Null hands the language back to detection; the current value stays until a message says
    // otherwise.
    sqlx::query!(
        "UPDATE conversation SET language = coalesce($2, language), language_set_by_member = $3,
                updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        language.map(Lang::code),
        language.is_some()
    )
    .execute(&mut *tx)
    .await?;
    let after = changed(&mut tx, ctx, "conversation.language_set", &before).await?;
    tx.commit().await?;
    Ok(after)
}

/// The tenant's live updates: new messages, delivery states, status and assignment changes,
/// for as long as the caller's credential holds.
async fn live(
    State(live): State<events::Live>,
    State(auth): State<AuthState>,
    ctx: Ctx,
    headers: HeaderMap,
) -> Result<impl IntoResponse> {
    let (Credential::Session(id) | Credential::ApiToken(id)) = ctx.credential;
    let slot = live.streams.open(&[Cap {
        holder: Holder::Credential(id),
        limit: live.limits.member_per_credential,
        per: "session or API token",
    }])?;
    let held = Held::new(&auth, &ctx, &headers, Permission::ConversationsRead);
    let tenant = ctx.tenant_id;
    Ok(events::stream(
        &live,
        move |event| event.tenant_id == tenant,
        held,
        slot,
    ))
}
