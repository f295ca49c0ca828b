//! The ticket pages: the list with its status counts and filters, one ticket with its SLA
//! clocks, comments and actions, and the form that opens a ticket (on the list, and in the
//! conversation page's side panel). Every change calls the cs domain's own functions, the ones
//! the API's routes call, so permissions and audit events are the same.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::inbox::{readable, rfc3339};
use super::{render, see_other, Chrome, Form};
use crate::app::AppState;
use crate::cs::tickets::{
    self, Filter, Kind, NewComment, NewTicket, Priority, Status, TicketChanges, TicketView,
};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Ctx, Path, Query};
use crate::rbac::Permission;

const LIST: &str = "/app/tickets";
/// How many tickets a list page shows.
const LIMIT: i64 = 50;

/// The ticket pages, each with the access of the API route it stands for.
pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    api.page(Method::GET, LIST, Requires(TicketsRead), list)
        .page(Method::POST, LIST, Requires(TicketsWrite), create)
        .page(
            Method::GET,
            "/app/tickets/{ticket_id}",
            Requires(TicketsRead),
            show,
        )
        .page(
            Method::POST,
            "/app/tickets/{ticket_id}",
            Requires(TicketsWrite),
            update,
        )
        .page(
            Method::POST,
            "/app/tickets/{ticket_id}/comments",
            Requires(TicketsWrite),
            comment,
        )
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

fn blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn invalid(message: &str) -> Error {
    Error::bad_request("invalid_filter", message.to_string())
}

fn priority_label(p: Priority) -> &'static str {
    match p {
        Priority::Low => "Low",
        Priority::Normal => "Normal",
        Priority::High => "High",
        Priority::Urgent => "Urgent",
    }
}

fn kind_label(k: Kind) -> &'static str {
    match k {
        Kind::Question => "Question",
        Kind::Incident => "Incident",
        Kind::Problem => "Problem",
        Kind::Task => "Task",
    }
}

fn when(at: Option<OffsetDateTime>) -> String {
    at.map(readable).unwrap_or_default()
}

// ---- The list ----

#[derive(Deserialize, Default)]
pub struct ListQuery {
    status: Option<String>,
    priority: Option<String>,
    /// `me`, `none`, or a member's id.
    assignee: Option<String>,
    q: Option<String>,
    after: Option<String>,
}

pub struct Row {
    pub id: Uuid,
    pub href: String,
    pub subject: String,
    pub status: &'static str,
    pub status_label: &'static str,
    pub priority: &'static str,
    pub priority_label: &'static str,
    pub assignee: String,
    pub by_agent: bool,
    pub breached: bool,
    pub due: String,
    pub created: String,
    pub created_iso: String,
}

pub struct Tab {
    pub href: String,
    pub label: &'static str,
    pub count: i64,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "web/tickets.html")]
struct ListPage {
    chrome: Chrome,
    can_write: bool,
    tabs: Vec<Tab>,
    status: String,
    q: String,
    priorities: Vec<Choice>,
    assignees: Vec<Choice>,
    rows: Vec<Row>,
    older_url: Option<String>,
    empty: &'static str,
}

fn list_href(status: &str, priority: &str, assignee: &str, q: &str, after: Option<Uuid>) -> String {
    let after = after.map(|id| id.to_string()).unwrap_or_default();
    let pairs: Vec<(&str, &str)> = [
        ("status", status),
        ("priority", priority),
        ("assignee", assignee),
        ("q", q),
        ("after", after.as_str()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if query.is_empty() {
        LIST.to_string()
    } else {
        format!("{LIST}?{query}")
    }
}

/// `GET /app/tickets`: the tickets, newest first, by status, priority, assignee or words.
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Response> {
    let status = blank(&query.status)
        .map(|s| Status::parse(s).ok_or_else(|| invalid("status is not a ticket status")))
        .transpose()?;
    let priority = blank(&query.priority)
        .map(|s| Priority::parse(s).ok_or_else(|| invalid("priority is not a ticket priority")))
        .transpose()?;
    let assignee_raw = blank(&query.assignee).unwrap_or_default().to_string();
    let (assignee_id, unassigned) = match assignee_raw.as_str() {
        "" => (None, None),
        "me" => (Some(ctx.member_id), None),
        "none" => (None, Some(true)),
        raw => (
            Some(
                Uuid::parse_str(raw)
                    .map_err(|_| invalid("assignee is me, none or a member's id"))?,
            ),
            None,
        ),
    };
    let q = blank(&query.q).unwrap_or_default().to_string();
    if q.chars().count() > 200 {
        return Err(invalid("search for at most 200 characters"));
    }
    let after = blank(&query.after)
        .map(|a| Uuid::parse_str(a).map_err(|_| invalid("after must be a ticket id")))
        .transpose()?;
    let chrome = Chrome::new(&state, &ctx, "tickets").await?;
    let filter = Filter {
        status,
        priority,
        assignee_id,
        unassigned,
        q: (!q.is_empty()).then(|| q.clone()),
        after,
        limit: LIMIT,
        ..Filter::default()
    };
    let items = tickets::list(&state, &ctx, &filter).await?;
    let counts = tickets::counts(&state, &ctx).await?;
    let staff = staff(&state, &ctx).await?;

    let status_str = status.map(Status::as_str).unwrap_or_default();
    let priority_str = priority.map(Priority::as_str).unwrap_or_default();
    let mut tabs = vec![Tab {
        href: list_href("", priority_str, &assignee_raw, &q, None),
        label: "All",
        count: counts.iter().map(|(_, n)| n).sum(),
        current: status.is_none(),
    }];
    tabs.extend(counts.iter().map(|(s, n)| Tab {
        href: list_href(s.as_str(), priority_str, &assignee_raw, &q, None),
        label: s.label(),
        count: *n,
        current: status == Some(*s),
    }));
    let older_url = (items.len() as i64 == LIMIT)
        .then(|| {
            items
                .last()
                .map(|t| list_href(status_str, priority_str, &assignee_raw, &q, Some(t.id)))
        })
        .flatten();
    let rows = items.iter().map(|t| row(t, &staff)).collect();
    let mut priorities = vec![Choice {
        value: String::new(),
        label: "Any priority".into(),
        selected: priority.is_none(),
    }];
    priorities.extend(Priority::ALL.iter().map(|p| Choice {
        value: p.as_str().into(),
        label: priority_label(*p).into(),
        selected: priority == Some(*p),
    }));
    let mut assignees = vec![
        Choice {
            value: String::new(),
            label: "Anyone".into(),
            selected: assignee_raw.is_empty(),
        },
        Choice {
            value: "me".into(),
            label: "Me".into(),
            selected: assignee_raw == "me",
        },
        Choice {
            value: "none".into(),
            label: "Nobody".into(),
            selected: assignee_raw == "none",
        },
    ];
    assignees.extend(staff.iter().map(|(id, name)| Choice {
        value: id.to_string(),
        label: name.clone(),
        selected: assignee_raw == id.to_string(),
    }));
    let filtered =
        status.is_some() || priority.is_some() || !assignee_raw.is_empty() || !q.is_empty();
    Ok(render(&ListPage {
        chrome,
        can_write: ctx.role.can(Permission::TicketsWrite),
        tabs,
        status: status_str.to_string(),
        q,
        priorities,
        assignees,
        rows,
        older_url,
        empty: if filtered {
            "No tickets match these filters."
        } else {
            "No tickets yet."
        },
    }))
}

async fn staff(state: &AppState, ctx: &Ctx) -> Result<Vec<(Uuid, String)>> {
    let mut tx = ctx.begin(state).await?;
    let staff = crate::tenants::members::assignable(&mut tx).await?;
    tx.commit().await?;
    Ok(staff)
}

fn name_of(staff: &[(Uuid, String)], id: Option<Uuid>) -> String {
    id.and_then(|id| staff.iter().find(|(m, _)| *m == id))
        .map(|(_, n)| n.clone())
        .unwrap_or_default()
}

fn row(t: &TicketView, staff: &[(Uuid, String)]) -> Row {
    Row {
        id: t.id,
        href: format!("{LIST}/{}", t.id),
        subject: t.subject.clone(),
        status: t.status.as_str(),
        status_label: t.status.label(),
        priority: t.priority.as_str(),
        priority_label: priority_label(t.priority),
        assignee: name_of(staff, t.assignee_id),
        by_agent: t.origin == tickets::Origin::Agent,
        breached: !t.status.is_solved() && t.sla.breached(),
        due: if t.first_response_at.is_none() {
            format!("Answer by {}", readable(t.sla.first_response_due_at))
        } else {
            format!("Solve by {}", readable(t.sla.resolution_due_at))
        },
        created: readable(t.created_at),
        created_iso: rfc3339(t.created_at),
    }
}

// ---- Opening a ticket ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NewForm {
    subject: String,
    description: String,
    priority: String,
    conversation_id: String,
}

/// `POST /app/tickets`: opens a ticket (from a conversation when the form names one) and goes
/// to it.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<NewForm>,
) -> Result<Response> {
    let priority = match form.priority.trim() {
        "" => None,
        raw => Some(Priority::parse(raw).ok_or_else(|| {
            Error::bad_request("invalid_form", "priority is low, normal, high or urgent")
        })?),
    };
    let conversation_id = match form.conversation_id.trim() {
        "" => None,
        raw => Some(Uuid::parse_str(raw).map_err(|_| Error::NotFound)?),
    };
    let ticket = tickets::create(
        &state,
        &ctx,
        NewTicket {
            subject: form.subject,
            description: Some(form.description),
            priority,
            conversation_id,
            ..NewTicket::default()
        },
    )
    .await?;
    Ok(see_other(&format!("{LIST}/{}", ticket.id)))
}

// ---- One ticket ----

pub struct CommentRow {
    pub author: String,
    pub body: String,
    pub public: bool,
    pub at: String,
    pub at_iso: String,
}

#[derive(Template)]
#[template(path = "web/ticket.html")]
struct TicketPage {
    chrome: Chrome,
    can_write: bool,
    can_reply: bool,
    id: Uuid,
    subject: String,
    description: String,
    status: &'static str,
    status_label: &'static str,
    priority_label: &'static str,
    kind_label: &'static str,
    by_agent: bool,
    origin: &'static str,
    requester: String,
    account: String,
    assignee: String,
    tags: String,
    due: String,
    shared: bool,
    conversations: Vec<(String, String)>,
    first_response_due: String,
    first_response_at: String,
    first_response_breached: bool,
    resolution_due: String,
    solved_at: String,
    resolution_breached: bool,
    statuses: Vec<Choice>,
    priorities: Vec<Choice>,
    assignees: Vec<Choice>,
    comments: Vec<CommentRow>,
    has_conversation: bool,
}

/// `GET /app/tickets/{id}`.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let detail = tickets::detail(&state, &ctx, id).await?;
    let chrome = Chrome::new(&state, &ctx, "tickets").await?;
    let staff = staff(&state, &ctx).await?;
    let t = detail.ticket;
    let mut tx = ctx.begin(&state).await?;
    let requester = match t.requester_id {
        Some(c) => crate::crm::contacts::fetch(&mut tx, c)
            .await
            .ok()
            .and_then(|c| c.name.or(c.email))
            .unwrap_or_else(|| "A contact".into()),
        None => String::new(),
    };
    let account = match t.account_id {
        Some(a) => crate::crm::accounts::fetch(&mut tx, a)
            .await
            .map(|a| a.name)
            .unwrap_or_default(),
        None => String::new(),
    };
    tx.commit().await?;
    let can_conversations = ctx.role.can(Permission::ConversationsRead);
    let page = TicketPage {
        chrome,
        can_write: ctx.role.can(Permission::TicketsWrite),
        can_reply: ctx.role.can(Permission::ConversationsReply),
        id: t.id,
        subject: t.subject.clone(),
        description: t.description.clone(),
        status: t.status.as_str(),
        status_label: t.status.label(),
        priority_label: priority_label(t.priority),
        kind_label: kind_label(t.kind),
        by_agent: t.origin == tickets::Origin::Agent,
        origin: match t.origin {
            tickets::Origin::Agent => "Opened by the AI agent",
            tickets::Origin::Conversation => "Opened from a conversation",
            tickets::Origin::Member => "Opened by a member",
        },
        requester,
        account,
        assignee: name_of(&staff, t.assignee_id),
        tags: t.tags.join(", "),
        due: when(t.due_at),
        shared: t.shared,
        conversations: if can_conversations {
            t.conversation_ids
                .iter()
                .map(|c| (format!("/app/conversations/{c}"), c.to_string()))
                .collect()
        } else {
            Vec::new()
        },
        first_response_due: readable(t.sla.first_response_due_at),
        first_response_at: when(t.first_response_at),
        first_response_breached: t.sla.first_response_breached,
        resolution_due: readable(t.sla.resolution_due_at),
        solved_at: when(t.solved_at),
        resolution_breached: t.sla.resolution_breached,
        statuses: Status::ALL
            .iter()
            .map(|s| Choice {
                value: s.as_str().into(),
                label: s.label().into(),
                selected: *s == t.status,
            })
            .collect(),
        priorities: Priority::ALL
            .iter()
            .map(|p| Choice {
                value: p.as_str().into(),
                label: priority_label(*p).into(),
                selected: *p == t.priority,
            })
            .collect(),
        assignees: std::iter::once(Choice {
            value: "none".into(),
            label: "Nobody".into(),
            selected: t.assignee_id.is_none(),
        })
        .chain(staff.iter().map(|(m, name)| Choice {
            value: m.to_string(),
            label: if *m == ctx.member_id {
                format!("{name} (you)")
            } else {
                name.clone()
            },
            selected: t.assignee_id == Some(*m),
        }))
        .collect(),
        comments: detail
            .comments
            .into_iter()
            .map(|c| CommentRow {
                author: if c.author_id.is_some() {
                    name_of(&staff, c.author_id)
                } else {
                    String::new()
                },
                body: c.body,
                public: c.public,
                at: readable(c.created_at),
                at_iso: rfc3339(c.created_at),
            })
            .collect(),
        has_conversation: !t.conversation_ids.is_empty(),
    };
    Ok(render(&page))
}

/// The actions form: each field left empty stays as it is.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ChangeForm {
    status: String,
    priority: String,
    /// `none` unassigns, `me` takes it.
    assignee: String,
}

/// `POST /app/tickets/{id}`: status, priority, assignee.
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<ChangeForm>,
) -> Result<Response> {
    let bad = |m: &str| Error::bad_request("invalid_form", m.to_string());
    let status = match form.status.trim() {
        "" => None,
        s => Some(Status::parse(s).ok_or_else(|| bad("status is not a ticket status"))?),
    };
    let priority = match form.priority.trim() {
        "" => None,
        p => Some(Priority::parse(p).ok_or_else(|| bad("priority is not a ticket priority"))?),
    };
    let assignee_id = match form.assignee.trim() {
        "" => None,
        "none" => Some(None),
        "me" => Some(Some(ctx.member_id)),
        raw => Some(Some(
            Uuid::parse_str(raw).map_err(|_| bad("assignee is a member's id"))?,
        )),
    };
    tickets::update(
        &state,
        &ctx,
        id,
        TicketChanges {
            status,
            priority,
            assignee_id,
            ..TicketChanges::default()
        },
    )
    .await?;
    Ok(see_other(&format!("{LIST}/{id}")))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CommentForm {
    body: String,
    /// `public` sends it to the customer; anything else keeps it internal.
    visibility: String,
}

/// `POST /app/tickets/{id}/comments`.
pub async fn comment(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<CommentForm>,
) -> Result<Response> {
    tickets::comment(
        &state,
        &ctx,
        id,
        NewComment {
            body: form.body,
            public: form.visibility == "public",
            conversation_id: None,
        },
    )
    .await?;
    Ok(see_other(&format!("{LIST}/{id}")))
}
