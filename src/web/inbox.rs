//! The inbox: views (mine, unassigned, all, one inbox), status tabs with counts, filters, and
//! the list of conversations, refreshed live from the members' event stream.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{render, Chrome};
use crate::app::AppState;
use crate::conversations::inbox::{self as list, Assignee, Filter};
use crate::conversations::{Channel, Handler, Status};
use crate::error::{Error, Result};
use crate::http::{Ctx, Query};

/// How many conversations a list shows.
const LIMIT: i64 = 100;

#[derive(Deserialize, Default)]
pub struct InboxQuery {
    view: Option<String>,
    inbox: Option<String>,
    status: Option<String>,
    handler: Option<String>,
    label: Option<String>,
    q: Option<String>,
}

/// The query as the page's links and forms repeat it; every field is a plain value.
#[derive(Clone, Default)]
pub struct FilterValues {
    pub view: String,
    pub inbox: String,
    pub status: String,
    pub handler: String,
    pub label: String,
    pub q: String,
}

impl FilterValues {
    fn href(&self) -> String {
        let pairs: Vec<(&str, &str)> = [
            ("view", self.view.as_str()),
            ("inbox", self.inbox.as_str()),
            ("status", self.status.as_str()),
            ("handler", self.handler.as_str()),
            ("label", self.label.as_str()),
            ("q", self.q.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        if query.is_empty() {
            super::HOME.to_string()
        } else {
            format!("{}?{query}", super::HOME)
        }
    }

    fn with(&self, change: impl FnOnce(&mut FilterValues)) -> FilterValues {
        let mut next = self.clone();
        change(&mut next);
        next
    }
}

pub struct NavLink {
    pub label: String,
    pub href: String,
    pub icon: &'static str,
    pub current: bool,
    pub count: i64,
}

pub struct Tab {
    pub label: &'static str,
    pub status: &'static str,
    pub href: String,
    pub count: i64,
    pub current: bool,
}

pub struct RowView {
    pub id: Uuid,
    pub href: String,
    pub contact: String,
    pub channel_icon: &'static str,
    pub channel_label: &'static str,
    pub inbox_name: String,
    pub preview: String,
    pub preview_author: &'static str,
    pub labels: Vec<String>,
    pub ai: bool,
    pub holder: String,
    pub waiting: bool,
    pub unread: bool,
    pub age: String,
    pub at_iso: String,
    pub at_title: String,
}

#[derive(Template)]
#[template(path = "web/inbox.html")]
struct InboxPage {
    chrome: Chrome,
    title: String,
    views: Vec<NavLink>,
    inboxes: Vec<NavLink>,
    tabs: Vec<Tab>,
    filter: FilterValues,
    labels: Vec<String>,
    rows: Vec<RowView>,
    refresh_url: String,
    empty: String,
}

fn invalid(field: &str, allowed: &str) -> Error {
    Error::bad_request(
        "invalid_filter",
        format!("{field} must be one of {allowed}"),
    )
}

pub(super) fn channel_parts(channel: Channel) -> (&'static str, &'static str) {
    match channel {
        Channel::Whatsapp => ("whatsapp", "WhatsApp"),
        Channel::Webchat => ("webchat", "Web chat"),
    }
}

pub(super) fn author_label(kind: Option<&str>) -> &'static str {
    match kind {
        Some("customer") => "Customer",
        Some("ai") => "AI",
        Some("member") => "Agent",
        Some("system") => "System",
        _ => "",
    }
}

/// "now", "4 min", "3 h", "2 d": how long ago, in the fewest characters.
pub(super) fn age(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - at).whole_seconds().max(0);
    match secs {
        0..=59 => "now".to_string(),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

pub(super) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(super) fn readable(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// A preview on one line, cut at a word near 140 characters.
pub(super) fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= 140 {
        return flat;
    }
    let cut: String = flat.chars().take(140).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{cut}…")
}

/// `GET /app`: the inbox.
pub async fn page(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<InboxQuery>,
) -> Result<Response> {
    let blank = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let view = blank(q.view).unwrap_or_else(|| "all".to_string());
    let assignee = match view.as_str() {
        "mine" => Assignee::Member(ctx.member_id),
        "unassigned" => Assignee::Nobody,
        "all" => Assignee::Anyone,
        _ => return Err(invalid("view", "mine, unassigned, all")),
    };
    let inbox_id = blank(q.inbox)
        .map(|id| Uuid::parse_str(&id).map_err(|_| invalid("inbox", "the tenant's inbox ids")))
        .transpose()?;
    let status = match blank(q.status) {
        None => Status::Open,
        Some(s) => *Status::ALL
            .iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| invalid("status", "open, pending, snoozed, resolved"))?,
    };
    let handler = match blank(q.handler) {
        None => None,
        Some(h) => Some(
            *Handler::ALL
                .iter()
                .find(|x| x.as_str() == h)
                .ok_or_else(|| invalid("handler", "ai, human"))?,
        ),
    };
    let label = blank(q.label);
    let search = blank(q.q);
    if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(Error::bad_request(
            "invalid_filter",
            "search for at most 200 characters",
        ));
    }
    let filter = Filter {
        assignee,
        inbox_id,
        handler,
        label: label.clone(),
        q: search.clone(),
    };
    let values = FilterValues {
        view: view.clone(),
        inbox: inbox_id.map(|id| id.to_string()).unwrap_or_default(),
        status: status.as_str().to_string(),
        handler: handler.map(|h| h.as_str().to_string()).unwrap_or_default(),
        label: label.unwrap_or_default(),
        q: search.unwrap_or_default(),
    };

    let chrome = Chrome::new(&state, &ctx, "inbox").await?;
    let mut tx = ctx.begin(&state).await?;
    let inboxes = list::inboxes(&mut tx, ctx.tenant_id).await?;
    if let Some(id) = inbox_id {
        // Another tenant's inbox, or none: not found, as everywhere.
        if !inboxes.iter().any(|i| i.id == id) {
            return Err(Error::NotFound);
        }
    }
    let counts = list::counts(&mut tx, ctx.tenant_id, &filter).await?;
    let rows = list::list(
        &mut tx,
        ctx.tenant_id,
        ctx.member_id,
        &filter,
        status,
        LIMIT,
    )
    .await?;
    let labels = list::labels(&mut tx, ctx.tenant_id).await?;
    tx.commit().await?;

    let now = OffsetDateTime::now_utc();
    let views = [
        ("mine", "Mine", "user"),
        ("unassigned", "Unassigned", "unassigned"),
        ("all", "All conversations", "users"),
    ]
    .into_iter()
    .map(|(key, label, icon)| NavLink {
        label: label.to_string(),
        href: values
            .with(|v| {
                v.view = key.to_string();
                v.inbox.clear();
            })
            .href(),
        icon,
        current: inbox_id.is_none() && view == key,
        count: 0,
    })
    .collect();
    let inbox_links = inboxes
        .iter()
        .map(|i| NavLink {
            label: i.name.clone(),
            href: values
                .with(|v| {
                    v.view = "all".to_string();
                    v.inbox = i.id.to_string();
                })
                .href(),
            icon: channel_parts(i.channel).0,
            current: inbox_id == Some(i.id),
            count: i.open,
        })
        .collect();
    let tabs = counts
        .iter()
        .map(|(st, count)| Tab {
            label: match st {
                Status::Open => "Open",
                Status::Pending => "Pending",
                Status::Snoozed => "Snoozed",
                Status::Resolved => "Resolved",
            },
            status: st.as_str(),
            href: values.with(|v| v.status = st.as_str().to_string()).href(),
            count: *count,
            current: *st == status,
        })
        .collect();
    let rows = rows
        .into_iter()
        .map(|r| {
            let (channel_icon, channel_label) = channel_parts(r.channel);
            let waiting = r.awaiting_reply() && r.status != Status::Resolved;
            RowView {
                id: r.id,
                href: format!("/app/conversations/{}", r.id),
                contact: r
                    .contact_name
                    .clone()
                    .or_else(|| r.contact_phone.clone())
                    .or_else(|| r.contact_email.clone())
                    .unwrap_or_else(|| "Unknown visitor".to_string()),
                channel_icon,
                channel_label,
                inbox_name: r.inbox_name.clone(),
                preview: one_line(r.preview.as_deref().unwrap_or_default()),
                preview_author: author_label(r.preview_author.as_deref()),
                labels: r.labels.clone(),
                ai: r.handler == Handler::Ai,
                holder: r
                    .assignee_name
                    .clone()
                    .unwrap_or_else(|| "Unassigned".to_string()),
                waiting,
                unread: r.unread,
                age: age(r.last_message_at, now),
                at_iso: rfc3339(r.last_message_at),
                at_title: readable(r.last_message_at),
            }
        })
        .collect();
    let title = match inbox_id.and_then(|id| inboxes.iter().find(|i| i.id == id)) {
        Some(inbox) => inbox.name.clone(),
        None => match view.as_str() {
            "mine" => "Mine".to_string(),
            "unassigned" => "Unassigned".to_string(),
            _ => "All conversations".to_string(),
        },
    };
    let empty = if values.q.is_empty() && values.label.is_empty() && values.handler.is_empty() {
        format!("No {} conversations here.", status.as_str())
    } else {
        "No conversations match these filters.".to_string()
    };
    Ok(render(&InboxPage {
        chrome,
        title,
        views,
        inboxes: inbox_links,
        tabs,
        refresh_url: values.href(),
        filter: values,
        labels,
        rows,
        empty,
    }))
}
