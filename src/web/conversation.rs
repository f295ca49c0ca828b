//! A conversation as the member answering it sees it: the thread (customer, AI, member and
//! system messages told apart, private notes set off, each WhatsApp message's delivery state),
//! the composer (reply or private note), the AI's waiting draft, the actions (assign, take over
//! and hand back, snooze, resolve and reopen, labels, language) and the contact panel
//! (correction, restriction, who processed their data).
//!
//! Every form posts to a page that calls the same domain function as the API's route, under
//! the same permission, so what a member may do and what the audit records are the same on
//! both. A refused change (a 4xx) shows the page again with the reason and the member's text
//! kept; a change that worked answers 303 back to the conversation.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use time::{Duration, OffsetDateTime, Time};
use uuid::Uuid;

use super::inbox::{author_label, channel_parts, readable, rfc3339};
use super::{render, see_other, Chrome, Form};
use crate::app::AppState;
use crate::conversations::canned;
use crate::conversations::inbox as list;
use crate::conversations::routes::{self as inbox_api, ReplyBody};
use crate::conversations::{ConversationView, Handler, MessageView};
use crate::crm::contacts::{self, ContactBody};
use crate::error::{Error, Result};
use crate::guardrails::Lang;
use crate::http::{Ctx, Path, Query};
use crate::rbac::Permission;
use crate::reviews::draft;

/// The newest messages a thread shows.
const THREAD_LIMIT: i64 = 200;

pub struct MessageRow {
    pub id: Uuid,
    pub classes: String,
    pub author: String,
    pub body: String,
    pub private: bool,
    pub at: String,
    pub at_iso: String,
    /// `sent`, `delivered`, `read`, `failed`, `queued`... for an outbound channel message.
    pub delivery: String,
    pub delivery_label: String,
    /// Why delivery failed, as the channel said.
    pub delivery_error: String,
    pub attachments: Vec<AttachmentRow>,
}

/// An attachment, shown the way it arrived.
pub struct AttachmentRow {
    pub icon: &'static str,
    pub label: String,
    pub detail: String,
    /// A link to open it (a map for a location).
    pub href: String,
}

pub struct DraftView {
    pub review_id: Uuid,
    pub text: String,
    /// "0.53", or empty when the run had none.
    pub confidence: String,
    pub sources: Vec<SourceRow>,
    /// The run that wrote the draft, for a member who may read executions.
    pub execution_href: String,
}

pub struct SourceRow {
    pub title: String,
    pub score: String,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub struct OtherConversation {
    pub href: String,
    pub channel_icon: &'static str,
    pub label: String,
    pub status: &'static str,
    pub age: String,
}

pub struct ProcessorRow {
    pub purpose: String,
    pub provider: String,
    pub model: String,
    pub runs: i64,
    pub last: String,
}

/// One of the contact's exports (DSR-1), with its download once written.
pub struct ExportRow {
    /// The API's download, which the session may use; empty until the export is done.
    pub href: String,
    pub status: String,
    pub progress: i32,
    pub asked: String,
    pub expires: String,
}

/// What a member may do here; a button they may not use is not shown (the page route refuses
/// it anyway).
pub struct Can {
    pub reply: bool,
    pub manage: bool,
    pub edit_contact: bool,
    pub restrict: bool,
    /// Open a ticket from the conversation.
    pub ticket: bool,
}

/// What the composer holds after a refused post, and why it was refused.
#[derive(Default)]
pub struct Kept {
    /// The refusal's status (409 for a conflict, 400 for bad input).
    pub status: Option<axum::http::StatusCode>,
    pub notice: String,
    pub text: String,
    pub note: bool,
    pub draft_id: String,
    /// The refused correction, so the member can fix it.
    pub contact: Option<ContactForm>,
    /// A canned reply to start the composer from (inserted without JavaScript).
    pub canned: Option<Uuid>,
}

/// A canned reply as the composer offers it: its text already filled in for this
/// conversation's contact and this member.
pub struct CannedChoice {
    pub id: Uuid,
    pub shortcut: String,
    pub title: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "web/conversation.html")]
struct ConversationPage {
    chrome: Chrome,
    id: Uuid,
    contact_name: String,
    contact_detail: String,
    channel_icon: &'static str,
    channel_label: &'static str,
    inbox_name: String,
    status: &'static str,
    snoozed_until: String,
    ai: bool,
    assigned_to_me: bool,
    holder: String,
    labels: String,
    label_list: Vec<String>,
    language: String,
    languages: Vec<Choice>,
    assignees: Vec<Choice>,
    messages: Vec<MessageRow>,
    /// The WhatsApp 24-hour window has closed: only a template may go (the API's route sends
    /// templates; the composer says so and offers a note).
    window_closed: bool,
    draft: Option<DraftView>,
    canned: Vec<CannedChoice>,
    kept: Kept,
    can: Can,
    contact: ContactPanel,
    /// Where the thread refreshes itself from when the live stream announces a message.
    refresh_url: String,
    /// The tickets linked to this conversation: (link, subject, status label).
    tickets: Vec<(String, String, &'static str)>,
    /// The agent's latest runs here, for a member who may read executions: (link, outcome, when).
    runs: Vec<(String, String, String)>,
}

pub struct ContactPanel {
    pub name: String,
    pub email: String,
    pub phone: String,
    pub whatsapp_id: String,
    pub account: String,
    pub restricted: bool,
    pub others: Vec<OtherConversation>,
    pub processors: Vec<ProcessorRow>,
    /// Shown only to members with the data-subject rights permission.
    pub exports: Vec<ExportRow>,
}

fn delivery_label(status: &str) -> &'static str {
    match status {
        "queued" => "Sending",
        "sent" => "Sent",
        "delivered" => "Delivered",
        "read" => "Read",
        "failed" => "Failed",
        "unknown" => "Delivery unknown",
        _ => "",
    }
}

/// The reason a channel gave for a failed delivery, in its own words.
fn delivery_error(error: Option<&Value>) -> String {
    let Some(error) = error else {
        return String::new();
    };
    let text = |key: &str| error[key].as_str().map(str::to_string);
    text("title")
        .or_else(|| text("message"))
        .or_else(|| text("detail"))
        .or_else(|| error["code"].as_i64().map(|c| format!("error {c}")))
        .unwrap_or_else(|| "no reason given".to_string())
}

fn attachment_rows(attachments: &Value) -> Vec<AttachmentRow> {
    let text = |a: &Value, key: &str| a[key].as_str().unwrap_or_default().to_string();
    attachments
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let kind = a["kind"].as_str().unwrap_or_default();
            Some(match kind {
                "location" => {
                    let (lat, lon) = (a["latitude"].as_f64()?, a["longitude"].as_f64()?);
                    let name = [text(a, "name"), text(a, "address")]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(", ");
                    AttachmentRow {
                        icon: "pin",
                        label: if name.is_empty() {
                            "Location".to_string()
                        } else {
                            name
                        },
                        detail: format!("{lat:.5}, {lon:.5}"),
                        href: format!(
                            "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=16/{lat}/{lon}"
                        ),
                    }
                }
                "image" | "video" | "audio" | "document" | "sticker" => AttachmentRow {
                    icon: "file",
                    label: match kind {
                        "image" => "Image",
                        "video" => "Video",
                        "audio" if a["voice"].as_bool() == Some(true) => "Voice message",
                        "audio" => "Audio",
                        "sticker" => "Sticker",
                        _ => "Document",
                    }
                    .to_string()
                        + &Some(text(a, "filename"))
                            .filter(|f| !f.is_empty())
                            .map(|f| format!(": {f}"))
                            .unwrap_or_default(),
                    detail: [text(a, "mime_type"), text(a, "caption")]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" · "),
                    href: String::new(),
                },
                "contacts" => AttachmentRow {
                    icon: "user",
                    label: "Shared contact".to_string(),
                    detail: a["contacts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["name"]["formatted_name"].as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    href: String::new(),
                },
                "reaction" => AttachmentRow {
                    icon: "note",
                    label: if a["removed"].as_bool() == Some(true) {
                        "Removed a reaction".to_string()
                    } else {
                        format!("Reacted {}", text(a, "emoji"))
                    },
                    detail: String::new(),
                    href: String::new(),
                },
                "button_reply" | "list_reply" => AttachmentRow {
                    icon: "check",
                    label: format!("Chose \u{201c}{}\u{201d}", text(a, "title")),
                    detail: String::new(),
                    href: String::new(),
                },
                "template" => AttachmentRow {
                    icon: "note",
                    label: format!("Template {}", a["template"]["name"].as_str().unwrap_or("")),
                    detail: a["template"]["language"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    href: String::new(),
                },
                _ => return None,
            })
        })
        .collect()
}

fn message_row(m: MessageView) -> MessageRow {
    let mut classes = vec![m.direction.clone(), m.author_kind.clone()];
    if m.private {
        classes.push("private".to_string());
    }
    let delivery = if m.private || m.direction != "outbound" {
        String::new()
    } else {
        m.delivery_status.clone().unwrap_or_default()
    };
    MessageRow {
        id: m.id,
        author: if m.private {
            "Private note".to_string()
        } else {
            author_label(Some(&m.author_kind)).to_string()
        },
        classes: classes.join(" "),
        private: m.private,
        at: readable(m.created_at),
        at_iso: rfc3339(m.created_at),
        delivery_label: delivery_label(&delivery).to_string(),
        delivery_error: if delivery == "failed" {
            delivery_error(m.delivery_error.as_ref())
        } else {
            String::new()
        },
        delivery,
        attachments: attachment_rows(&m.attachments),
        body: m.body,
    }
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    /// Set by "Insert into the reply" without JavaScript: the composer starts from the AI's
    /// waiting draft.
    use_draft: Option<String>,
    /// Set by "Insert" of the canned replies without JavaScript: the composer starts from it.
    canned: Option<String>,
}

/// `GET /app/conversations/{id}`.
pub async fn page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<Response> {
    let mut kept = Kept::default();
    if q.use_draft.is_some() {
        let mut tx = ctx.begin(&state).await?;
        if let Some(d) = draft::pending_draft(&mut tx, id).await? {
            kept.text = d.draft;
            kept.draft_id = d.review_id.to_string();
        }
        tx.commit().await?;
    }
    if let Some(raw) = q.canned.as_deref().filter(|c| !c.trim().is_empty()) {
        kept.canned = Some(Uuid::parse_str(raw.trim()).map_err(|_| {
            Error::bad_request("invalid_canned_reply", "canned is a canned reply's id")
        })?);
    }
    show(&state, &ctx, id, kept).await
}

/// The page, with what a refused post kept.
async fn show(state: &AppState, ctx: &Ctx, id: Uuid, kept: Kept) -> Result<Response> {
    let chrome = Chrome::new(state, ctx, "inbox").await?;
    let mut tx = ctx.begin(state).await?;
    let conversation = crate::conversations::fetch(&mut tx, id).await?;
    let contact = contacts::fetch(&mut tx, conversation.contact_id).await?;
    let messages = list::recent_messages(&mut tx, id, THREAD_LIMIT).await?;
    // Opening a conversation reads it (for this member's unread markers; only a member's own
    // row changes, so a cross-site link can do no more than that).
    list::mark_read(&mut tx, ctx.tenant_id, ctx.member_id, id).await?;
    let inbox_name = list::inboxes(&mut tx, ctx.tenant_id)
        .await?
        .into_iter()
        .find(|i| i.id == conversation.inbox_id)
        .map(|i| i.name)
        .unwrap_or_default();
    let staff = crate::tenants::members::assignable(&mut tx).await?;
    let account = match contact.account_id {
        Some(account) => crate::crm::accounts::fetch(&mut tx, account)
            .await
            .map(|a| a.name)
            .unwrap_or_default(),
        None => String::new(),
    };
    let others = list::of_contact(&mut tx, contact.id, 11).await?;
    let processors = crate::agent::contact_processors(&mut tx, contact.id).await?;
    let tickets = if ctx.role.can(Permission::TicketsRead) {
        crate::cs::tickets::of_conversation(&mut tx, id)
            .await?
            .into_iter()
            .map(|t| {
                (
                    format!("/app/tickets/{}", t.id),
                    t.subject,
                    t.status.label(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let exports = if ctx.role.can(Permission::DataSubjectRights) {
        crate::privacy::export::for_contact(&mut tx, contact.id).await?
    } else {
        Vec::new()
    };
    let pending = draft::pending_draft(&mut tx, id).await?;
    let sources = match pending.as_ref().and_then(|d| d.execution_id) {
        Some(execution) => crate::agent::run_sources(&mut tx, execution).await?,
        None => Vec::new(),
    };
    let read_runs = ctx.role.can(Permission::ExecutionsRead);
    let runs: Vec<(String, String, String)> = if read_runs {
        crate::agent::of_conversation(&mut tx, id)
            .await?
            .into_iter()
            .take(10)
            .map(|x| {
                (
                    format!("/app/executions/{}", x.id),
                    x.outcome.as_str().replace('_', " "),
                    readable(x.started_at),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let can_reply = ctx.role.can(Permission::ConversationsReply);
    let fill = |body: &str| canned::fill(body, contact.name.as_deref(), &chrome.member_name);
    let canned_replies = if can_reply {
        canned::list_on(&mut tx, None).await?
    } else {
        Vec::new()
    };
    let mut kept = kept;
    if let Some(chosen) = kept.canned {
        kept.text = fill(&canned::fetch_on(&mut tx, chosen).await?.body);
    }
    tx.commit().await?;
    let canned = canned_replies
        .into_iter()
        .map(|c| CannedChoice {
            text: fill(&c.body),
            id: c.id,
            shortcut: c.shortcut,
            title: c.title,
        })
        .collect();

    let now = OffsetDateTime::now_utc();
    let holder = conversation
        .assignee_id
        .and_then(|a| staff.iter().find(|(id, _)| *id == a))
        .map(|(_, name)| name.clone())
        .unwrap_or_else(|| "Unassigned".to_string());
    let mut assignees = vec![Choice {
        value: "none".to_string(),
        label: "Nobody".to_string(),
        selected: conversation.assignee_id.is_none(),
    }];
    assignees.extend(staff.iter().map(|(member, name)| Choice {
        value: member.to_string(),
        label: if *member == ctx.member_id {
            format!("{name} (you)")
        } else {
            name.clone()
        },
        selected: conversation.assignee_id == Some(*member),
    }));
    let language = conversation.language.clone().unwrap_or_default();
    let mut languages = vec![Choice {
        value: String::new(),
        label: "Detect from messages".to_string(),
        selected: !conversation.language_set_by_member,
    }];
    languages.extend(
        [
            ("en", "English"),
            ("pt", "Portuguese"),
            ("es", "Spanish"),
            ("de", "German"),
        ]
        .into_iter()
        .map(|(code, label)| Choice {
            value: code.to_string(),
            label: label.to_string(),
            selected: conversation.language_set_by_member && language == code,
        }),
    );
    let (channel_icon, channel_label) = channel_parts(conversation.channel);
    let contact_detail = [contact.phone.clone(), contact.email.clone()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ");
    let draft = pending.map(|d| DraftView {
        execution_href: match d.execution_id {
            Some(x) if read_runs => format!("/app/executions/{x}"),
            _ => String::new(),
        },
        review_id: d.review_id,
        text: d.draft,
        confidence: d.confidence.map(|c| format!("{c:.2}")).unwrap_or_default(),
        sources: sources
            .into_iter()
            .map(|s| SourceRow {
                title: s.title,
                score: format!("{:.2}", s.score),
            })
            .collect(),
    });
    let can = Can {
        reply: can_reply,
        manage: ctx.role.can(Permission::ConversationsManage),
        edit_contact: ctx.role.can(Permission::ContactsWrite),
        restrict: ctx.role.can(Permission::DataSubjectRights),
        ticket: ctx.role.can(Permission::TicketsWrite),
    };
    let kept_contact = kept.contact.as_ref();
    let panel = ContactPanel {
        name: kept_contact
            .map(|c| c.name.clone())
            .unwrap_or_else(|| contact.name.clone().unwrap_or_default()),
        email: kept_contact
            .map(|c| c.email.clone())
            .unwrap_or_else(|| contact.email.clone().unwrap_or_default()),
        phone: kept_contact
            .map(|c| c.phone.clone())
            .unwrap_or_else(|| contact.phone.clone().unwrap_or_default()),
        whatsapp_id: contact.whatsapp_id.clone().unwrap_or_default(),
        account,
        restricted: contact.restricted,
        others: others
            .into_iter()
            .filter(|c| c.id != id)
            .take(10)
            .map(|c| {
                let (icon, label) = channel_parts(c.channel);
                OtherConversation {
                    href: format!("/app/conversations/{}", c.id),
                    channel_icon: icon,
                    label: label.to_string(),
                    status: c.status.as_str(),
                    age: readable(c.last_message_at),
                }
            })
            .collect(),
        processors: processors
            .into_iter()
            .map(|p| ProcessorRow {
                purpose: if p.purpose == "chat" {
                    "Answers".to_string()
                } else {
                    "Knowledge search".to_string()
                },
                provider: if p.offline {
                    "Offline responder (nothing left the platform)".to_string()
                } else {
                    p.provider
                },
                model: p.model,
                runs: p.runs,
                last: readable(p.last_at),
            })
            .collect(),
        exports: exports
            .into_iter()
            .map(|e| ExportRow {
                href: if e.status == "done" {
                    format!("/api/v1/contact-exports/{}/download", e.id)
                } else {
                    String::new()
                },
                status: e.status,
                progress: e.progress,
                asked: readable(e.created_at),
                expires: readable(e.expires_at),
            })
            .collect(),
    };
    let page = ConversationPage {
        chrome,
        id,
        contact_name: contact.shown_name(),
        contact_detail,
        channel_icon,
        channel_label,
        inbox_name,
        status: conversation.status.as_str(),
        snoozed_until: conversation.snoozed_until.map(readable).unwrap_or_default(),
        ai: conversation.handler == Handler::Ai,
        assigned_to_me: conversation.assignee_id == Some(ctx.member_id),
        holder,
        labels: conversation.labels.join(", "),
        label_list: conversation.labels.clone(),
        language: Lang::from_code(&language)
            .map(|l| l.code().to_string())
            .unwrap_or_default(),
        languages,
        assignees,
        messages: messages.into_iter().map(message_row).collect(),
        window_closed: !crate::channels::free_form_open(
            conversation.channel,
            conversation.last_inbound_at,
            now,
        ),
        draft,
        canned,
        can,
        contact: panel,
        refresh_url: format!("/app/conversations/{id}"),
        tickets,
        runs,
        kept,
    };
    let mut response = render(&page);
    if let Some(status) = page.kept.status {
        *response.status_mut() = status;
    }
    Ok(response)
}

/// The conversation, if the member's tenant has it: every action checks this first, so a
/// foreign or unknown id is not found whatever the form says.
async fn visible(state: &AppState, ctx: &Ctx, id: Uuid) -> Result<ConversationView> {
    let mut tx = ctx.begin(state).await?;
    let conversation = crate::conversations::fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(conversation)
}

/// A draft handled while the member was editing it: their text stays in the composer, to be
/// sent as a plain reply.
fn draft_gone_keeps_text(e: Error) -> Error {
    match e {
        Error::Conflict {
            code: "draft_gone", ..
        } => Error::conflict(
            "draft_gone",
            "the AI's draft was handled meanwhile: your text is kept, send it as a reply",
        ),
        e => e,
    }
}

fn back(id: Uuid) -> Response {
    see_other(&format!("/app/conversations/{id}"))
}

/// A change that worked goes back to the conversation; one the domain refused (a 4xx with a
/// reason) shows the page again with the reason and what the member had typed; anything
/// else (not found, not allowed, a failure) is the error page.
async fn settle<T>(
    state: &AppState,
    ctx: &Ctx,
    id: Uuid,
    result: Result<T>,
    kept: impl FnOnce() -> Kept,
) -> Result<Response> {
    match result {
        Ok(_) => Ok(back(id)),
        Err(e) => {
            let refused = super::refusal(e)?;
            let mut kept = kept();
            kept.status = Some(refused.status);
            kept.notice = refused.message;
            show(state, ctx, id, kept).await
        }
    }
}

#[derive(Deserialize)]
pub struct ReplyForm {
    #[serde(default)]
    body: String,
    /// `reply` (to the customer) or `note` (private): the button pressed.
    #[serde(default)]
    mode: String,
    /// The AI draft this reply started from, when the member inserted it.
    #[serde(default)]
    draft_id: String,
}

/// `POST /app/conversations/{id}/reply`: a reply through the channel, or a private note. A
/// reply that started from the AI's draft closes the draft as handled by this member.
pub async fn reply(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<ReplyForm>,
) -> Result<Response> {
    let note = match form.mode.as_str() {
        "note" => true,
        "reply" | "" => false,
        _ => return Err(Error::bad_request("invalid_form", "mode is reply or note")),
    };
    let draft_id = match form.draft_id.trim() {
        "" => None,
        raw => Some(Uuid::parse_str(raw).map_err(|_| {
            Error::bad_request("invalid_form", "draft_id is the id of a waiting draft")
        })?),
    };
    let result = match (draft_id, note) {
        (Some(review), false) => {
            visible(&state, &ctx, id).await?;
            draft::send(&state.db, &ctx, review, Some(id), &form.body)
                .await
                .map(drop)
                .map_err(draft_gone_keeps_text)
        }
        _ => {
            let mut tx = ctx.begin(&state).await?;
            let conversation = crate::conversations::fetch(&mut tx, id).await?;
            let body = ReplyBody {
                body: Some(form.body.clone()),
                private: note,
                template: None,
            };
            match inbox_api::send_reply(
                &mut tx,
                &ctx,
                &conversation,
                &body,
                crate::channels::free_form_open,
            )
            .await
            {
                Ok(_) => tx.commit().await.map_err(Error::from),
                Err(e) => Err(e),
            }
        }
    };
    settle(&state, &ctx, id, result, || Kept {
        text: form.body.clone(),
        note,
        draft_id: if note {
            String::new()
        } else {
            form.draft_id.clone()
        },
        ..Kept::default()
    })
    .await
}

#[derive(Deserialize)]
pub struct DraftForm {
    #[serde(default)]
    review_id: String,
}

/// `POST /app/conversations/{id}/discard-draft`: the AI's draft is not sent.
pub async fn discard_draft(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<DraftForm>,
) -> Result<Response> {
    visible(&state, &ctx, id).await?;
    let result = match Uuid::parse_str(form.review_id.trim()) {
        Ok(review) => draft::discard(&state.db, &ctx, review, Some(id))
            .await
            .map(drop),
        Err(_) => Err(Error::conflict(
            "draft_gone",
            "the AI's draft was handled meanwhile",
        )),
    };
    settle(&state, &ctx, id, result, Kept::default).await
}

#[derive(Deserialize)]
pub struct AssignForm {
    /// `me`, `none`, or a member's id.
    #[serde(default)]
    assignee: String,
}

/// `POST /app/conversations/{id}/assign`: claim, give to someone, or unassign.
pub async fn assign(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<AssignForm>,
) -> Result<Response> {
    visible(&state, &ctx, id).await?;
    let assignee = match form.assignee.as_str() {
        "me" => Some(ctx.member_id),
        "none" => None,
        raw => Some(Uuid::parse_str(raw).map_err(|_| {
            Error::bad_request("invalid_assignee", "assignee is me, none or a member's id")
        })?),
    };
    let result = inbox_api::assign_to(&state.db, &ctx, id, assignee).await;
    settle(&state, &ctx, id, result, Kept::default).await
}

#[derive(Deserialize)]
pub struct HandlerForm {
    /// `human` (take over from the AI) or `ai` (hand back).
    #[serde(default)]
    handler: String,
}

/// `POST /app/conversations/{id}/handler`: take over from the AI, or hand back to it.
pub async fn handler(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<HandlerForm>,
) -> Result<Response> {
    visible(&state, &ctx, id).await?;
    let handler = match form.handler.as_str() {
        "human" => Handler::Human,
        "ai" => Handler::Ai,
        _ => return Err(Error::bad_request("invalid_form", "handler is human or ai")),
    };
    let result = inbox_api::hand_to(&state.db, &ctx, id, handler).await;
    settle(&state, &ctx, id, result, Kept::default).await
}

#[derive(Deserialize)]
pub struct StatusForm {
    #[serde(default)]
    status: String,
    /// For a snooze: `1h`, `tomorrow` (09:00 UTC), `week`, or `custom` with `until`.
    #[serde(default)]
    snooze: String,
    /// A custom snooze end, `YYYY-MM-DDTHH:MM` in UTC (a `datetime-local` field).
    #[serde(default)]
    until: String,
}

/// When a snooze ends, from the form's choice.
fn snooze_end(form: &StatusForm, now: OffsetDateTime) -> Result<OffsetDateTime> {
    let nine = Time::from_hms(9, 0, 0).unwrap_or(Time::MIDNIGHT);
    match form.snooze.as_str() {
        "1h" | "" => Ok(now + Duration::hours(1)),
        "tomorrow" => Ok((now + Duration::days(1)).replace_time(nine)),
        "week" => Ok((now + Duration::days(7)).replace_time(nine)),
        "custom" => {
            let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
            time::PrimitiveDateTime::parse(form.until.trim(), &format)
                .map(|t| t.assume_utc())
                .map_err(|_| {
                    Error::bad_request(
                        "invalid_snooze",
                        "give the snooze's end as a date and a time",
                    )
                })
        }
        _ => Err(Error::bad_request(
            "invalid_snooze",
            "snooze is 1h, tomorrow, week or custom",
        )),
    }
}

/// `POST /app/conversations/{id}/status`: open, pending, snooze (until a time) or resolve.
pub async fn status(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<StatusForm>,
) -> Result<Response> {
    visible(&state, &ctx, id).await?;
    let result = match form.status.as_str() {
        "snoozed" => match snooze_end(&form, OffsetDateTime::now_utc()) {
            Ok(until) => {
                inbox_api::change_status(&state.db, &ctx, id, "snoozed", Some(until)).await
            }
            Err(e) => Err(e),
        },
        other => inbox_api::change_status(&state.db, &ctx, id, other, None).await,
    };
    settle(&state, &ctx, id, result, Kept::default).await
}

#[derive(Deserialize)]
pub struct LabelsForm {
    /// Comma-separated.
    #[serde(default)]
    labels: String,
}

/// `POST /app/conversations/{id}/labels`: the labels, comma-separated.
pub async fn labels(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<LabelsForm>,
) -> Result<Response> {
    visible(&state, &ctx, id).await?;
    let labels: Vec<String> = form
        .labels
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let result = inbox_api::replace_labels(&state.db, &ctx, id, &labels).await;
    settle(&state, &ctx, id, result, Kept::default).await
}

#[derive(Deserialize)]
pub struct LanguageForm {
    /// A language code, or empty to detect it again.
    #[serde(default)]
    language: String,
}

/// `POST /app/conversations/{id}/language`.
pub async fn language(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<LanguageForm>,
) -> Result<Response> {
    visible(&state, &ctx, id).await?;
    let language = match form.language.trim() {
        "" => None,
        code => Some(Lang::from_code(code).ok_or_else(|| {
            Error::bad_request("invalid_language", "language is one of en, pt, es, de")
        })?),
    };
    let result = inbox_api::choose_language(&state.db, &ctx, id, language).await;
    settle(&state, &ctx, id, result, Kept::default).await
}

#[derive(Deserialize, Clone)]
pub struct ContactForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
}

/// `POST /app/conversations/{id}/contact`: corrects the contact's name, e-mail and phone
/// (DSR-2); an emptied field is cleared.
pub async fn contact(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<ContactForm>,
) -> Result<Response> {
    let contact_id = visible(&state, &ctx, id).await?.contact_id;
    let value = |v: &str| Some(Some(v.trim().to_string()).filter(|v| !v.is_empty()));
    let body = ContactBody {
        name: value(&form.name),
        email: value(&form.email),
        phone: value(&form.phone),
        ..ContactBody::default()
    };
    let result = contacts::correct(&state.db, &ctx, contact_id, body).await;
    settle(&state, &ctx, id, result, || Kept {
        contact: Some(form.clone()),
        ..Kept::default()
    })
    .await
}

#[derive(Deserialize)]
pub struct RestrictionForm {
    /// `restrict` or `lift`.
    #[serde(default)]
    restriction: String,
}

/// `POST /app/conversations/{id}/restriction`: restrict the contact's processing (DSR-4), or
/// lift it.
pub async fn restriction(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<RestrictionForm>,
) -> Result<Response> {
    let contact_id = visible(&state, &ctx, id).await?.contact_id;
    let restricted = match form.restriction.as_str() {
        "restrict" => true,
        "lift" => false,
        _ => {
            return Err(Error::bad_request(
                "invalid_form",
                "restriction is restrict or lift",
            ))
        }
    };
    let result = crate::privacy::set_restricted(&state.db, &ctx, contact_id, restricted).await;
    settle(&state, &ctx, id, result, Kept::default).await
}

/// `POST /app/conversations/{id}/export`: asks for an export of everything held about the
/// contact (DSR-1), as the API's route does; the panel then shows its progress and download.
pub async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(_): Form<ExportForm>,
) -> Result<Response> {
    let contact_id = visible(&state, &ctx, id).await?.contact_id;
    let result = crate::privacy::export::request(
        &state.db,
        &ctx,
        contact_id,
        crate::privacy::export::NewExport::default(),
    )
    .await;
    settle(&state, &ctx, id, result, Kept::default).await
}

/// The export's form carries nothing but its CSRF token (checked before the page runs).
#[derive(Deserialize)]
pub struct ExportForm {}

#[derive(Deserialize)]
pub struct ErasureForm {
    /// `erase` or `anonymise`.
    #[serde(default)]
    mode: String,
    /// The member types the mode's word again: an erasure cannot be undone.
    #[serde(default)]
    confirm: String,
}

/// `POST /app/conversations/{id}/erasure`: erases or anonymises the contact (DSR-3) through the
/// same domain call as the API. An erased contact's conversation is gone with them, so the
/// member lands in the inbox; an anonymised one stays, blank.
pub async fn erasure(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<ErasureForm>,
) -> Result<Response> {
    use crate::privacy::erasure::{self, Mode, ReceiptKey};
    let contact_id = visible(&state, &ctx, id).await?.contact_id;
    let mode = match form.mode.as_str() {
        "erase" => Mode::Erase,
        "anonymise" => Mode::Anonymise,
        _ => {
            return Err(Error::bad_request(
                "invalid_form",
                "mode is erase or anonymise",
            ))
        }
    };
    if form.confirm.trim().to_lowercase() != form.mode {
        let refused: Result<()> = Err(Error::bad_request(
            "confirmation_required",
            format!("type {} to confirm: this cannot be undone", form.mode),
        ));
        return settle(&state, &ctx, id, refused, Kept::default).await;
    }
    let key = ReceiptKey::from_master(&state.sealer);
    let result = erasure::erase(&state.db, &key, &ctx, contact_id, mode, None).await;
    match (mode, result) {
        (Mode::Erase, Ok(_)) => Ok(see_other(super::HOME)),
        (_, result) => settle(&state, &ctx, id, result, Kept::default).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_delivery_shows_the_channels_own_words() {
        let error = serde_json::json!({ "code": 131047, "title": "Re-engagement message" });
        assert_eq!(delivery_error(Some(&error)), "Re-engagement message");
        let bare = serde_json::json!({ "code": 131026 });
        assert_eq!(delivery_error(Some(&bare)), "error 131026");
    }

    #[test]
    fn a_location_links_to_a_map_and_names_the_place() {
        let rows = attachment_rows(
            &serde_json::json!([{ "kind": "location", "latitude": -23.55,
            "longitude": -46.63, "name": "Loja Centro", "address": "Rua A, 1" }]),
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].label, "Loja Centro, Rua A, 1");
        assert!(rows[0].href.contains("mlat=-23.55"));
    }

    #[test]
    fn snoozing_until_tomorrow_ends_at_nine_the_next_morning() {
        let now = time::macros::datetime!(2026-12-07 17:30 UTC);
        let form = StatusForm {
            status: "snoozed".into(),
            snooze: "tomorrow".into(),
            until: String::new(),
        };
        assert_eq!(
            snooze_end(&form, now).unwrap(),
            time::macros::datetime!(2026-12-08 09:00 UTC)
        );
        let custom = StatusForm {
            status: "snoozed".into(),
            snooze: "custom".into(),
            until: "2026-12-24T08:15".into(),
        };
        assert_eq!(
            snooze_end(&custom, now).unwrap(),
            time::macros::datetime!(2026-12-24 08:15 UTC)
        );
        let bad = StatusForm {
            status: "snoozed".into(),
            snooze: "custom".into(),
            until: "soon".into(),
        };
        assert_eq!(snooze_end(&bad, now).unwrap_err().code(), "invalid_snooze");
    }
}
