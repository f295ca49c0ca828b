//! The account pages: the list with a search, and one account with its people and its
//! timeline (conversations, tickets, tasks, newest first, older pages by cursor). They call the
//! crm and cs functions the API's routes call, so permissions are the same: the timeline shows
//! only the sources the member's role may read.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::inbox::{readable, rfc3339};
use super::{render, Chrome};
use crate::app::AppState;
use crate::crm::timeline::{Cursor, Event};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Ctx, Path, Query};
use crate::rbac::Permission;

const LIST: &str = "/app/accounts";
/// Accounts per list page, and events per timeline page.
const LIMIT: i64 = 50;

pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    api.page(Method::GET, LIST, Requires(ContactsRead), list)
        .page(
            Method::GET,
            "/app/accounts/{account_id}",
            Requires(ContactsRead),
            show,
        )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    q: Option<String>,
    after: Option<Uuid>,
}

pub struct Row {
    pub href: String,
    pub name: String,
    pub domain: String,
    pub created: String,
    pub created_iso: String,
}

#[derive(Template)]
#[template(path = "web/accounts.html")]
struct ListPage {
    chrome: Chrome,
    q: String,
    rows: Vec<Row>,
    older_url: Option<String>,
}

/// `GET /app/accounts`: the accounts, newest first, or those whose name or domain holds `q`.
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Response> {
    let q = query.q.unwrap_or_default().trim().to_string();
    if q.chars().count() > 200 {
        return Err(Error::bad_request(
            "invalid_filter",
            "search for at most 200 characters",
        ));
    }
    let chrome = Chrome::new(&state, &ctx, "accounts").await?;
    let mut tx = ctx.begin(&state).await?;
    let accounts = crate::crm::accounts::search(&mut tx, Some(&q), query.after, LIMIT).await?;
    tx.commit().await?;
    let older_url = (accounts.len() as i64 == LIMIT)
        .then(|| accounts.last())
        .flatten()
        .map(|last| {
            let pairs: Vec<(&str, String)> = [("q", q.clone()), ("after", last.id.to_string())]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect();
            format!(
                "{LIST}?{}",
                serde_urlencoded::to_string(pairs).unwrap_or_default()
            )
        });
    let rows = accounts
        .into_iter()
        .map(|a| Row {
            href: format!("{LIST}/{}", a.id),
            name: a.name,
            domain: a.domain.unwrap_or_default(),
            created: readable(a.created_at),
            created_iso: rfc3339(a.created_at),
        })
        .collect();
    Ok(render(&ListPage {
        chrome,
        q,
        rows,
        older_url,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// The timeline's position: the previous page's last event.
    after: Option<String>,
}

pub struct Person {
    pub name: String,
    pub reach: String,
}

pub struct Entry {
    pub kind: String,
    pub icon: &'static str,
    pub title: String,
    pub href: Option<String>,
    pub status: String,
    pub at: String,
    pub at_iso: String,
}

#[derive(Template)]
#[template(path = "web/account.html")]
struct AccountPage {
    chrome: Chrome,
    name: String,
    domain: String,
    people: Vec<Person>,
    entries: Vec<Entry>,
    older_url: Option<String>,
    newest_url: Option<String>,
    /// The new-task form, for members who may write tasks: the account's id and the choices.
    task_form: Option<(Uuid, Vec<(String, String)>)>,
}

fn entry(event: Event) -> Entry {
    let (icon, href) = match event.entity_type.as_str() {
        "conversation" => (
            "webchat",
            Some(format!("/app/conversations/{}", event.entity_id)),
        ),
        "ticket" => ("note", Some(format!("/app/tickets/{}", event.entity_id))),
        "task" => ("check", Some("/app/tasks".to_string())),
        "deal" => ("file", Some(format!("/app/deals/{}", event.entity_id))),
        _ => ("note", None),
    };
    Entry {
        icon,
        href,
        status: event.status.clone().unwrap_or_default().replace('_', " "),
        at: readable(event.at),
        at_iso: rfc3339(event.at),
        title: event.title,
        kind: event.kind,
    }
}

/// `GET /app/accounts/{id}`: the account, its people and its timeline.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Query(query): Query<ShowQuery>,
) -> Result<Response> {
    let after = query
        .after
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(Cursor::parse)
        .transpose()?;
    let chrome = Chrome::new(&state, &ctx, "accounts").await?;
    let mut tx = crate::cs::begin(&state, &ctx).await?;
    let account = crate::crm::accounts::fetch(&mut tx, id).await?;
    let people = crate::crm::contacts::of_account(&mut tx, id, 100).await?;
    let events = crate::cs::timeline::for_account(&mut tx, &ctx, id, after.as_ref(), LIMIT).await?;
    let task_form = if ctx.role.can(Permission::TasksWrite) {
        let staff = crate::tenants::members::assignable(&mut tx).await?;
        Some((id, super::tasks::assignee_choices(&staff, ctx.member_id)))
    } else {
        None
    };
    tx.commit().await?;
    let older_url = (events.len() as i64 == LIMIT)
        .then(|| events.last())
        .flatten()
        .map(|last| {
            format!(
                "{LIST}/{id}?{}",
                serde_urlencoded::to_string([("after", last.cursor().encode())])
                    .unwrap_or_default()
            )
        });
    Ok(render(&AccountPage {
        chrome,
        name: account.name,
        domain: account.domain.unwrap_or_default(),
        people: people
            .iter()
            .map(|p| Person {
                name: p.shown_name(),
                reach: [p.email.as_deref(), p.phone.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" · "),
            })
            .collect(),
        entries: events.into_iter().map(entry).collect(),
        older_url,
        newest_url: after.map(|_| format!("{LIST}/{id}")),
        task_form,
    }))
}
