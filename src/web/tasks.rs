//! The task pages: the three everyday views (mine, overdue, due this week) with a complete
//! button on each open task, and a form to add one. Every change calls the cs domain's own
//! functions, the ones the API's routes call, so permissions and audit events are the same.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::inbox::{readable, rfc3339};
use super::{render, see_other, Chrome, Form};
use crate::app::AppState;
use crate::cs::tasks::{self, Filter, NewTask, View};
use crate::cs::tickets::parse_when;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Ctx, Path, Query};
use crate::rbac::Permission;

const LIST: &str = "/app/tasks";
const LIMIT: i64 = 100;

pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    api.page(Method::GET, LIST, Requires(TasksRead), list)
        .page(Method::POST, LIST, Requires(TasksWrite), create)
        .page(
            Method::POST,
            "/app/tasks/{task_id}/complete",
            Requires(TasksWrite),
            complete,
        )
}

fn view_label(v: View) -> &'static str {
    match v {
        View::Mine => "My tasks",
        View::Overdue => "Overdue",
        View::DueThisWeek => "Due this week",
    }
}

fn href(view: View) -> String {
    format!("{LIST}?view={}", view.as_str())
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    view: Option<String>,
}

pub struct Tab {
    pub href: String,
    pub label: &'static str,
    pub current: bool,
}

pub struct Row {
    pub id: Uuid,
    pub title: String,
    pub notes: String,
    pub due: String,
    pub due_iso: String,
    pub overdue: bool,
    pub assignee: String,
    pub ticket_href: String,
}

#[derive(Template)]
#[template(path = "web/tasks.html")]
struct ListPage {
    chrome: Chrome,
    can_write: bool,
    view: &'static str,
    tabs: Vec<Tab>,
    rows: Vec<Row>,
    assignees: Vec<(String, String)>,
    empty: &'static str,
}

/// `GET /app/tasks?view=mine|overdue|due_this_week` (mine when absent).
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Response> {
    let view = match query.view.as_deref().map(str::trim) {
        None | Some("") => View::Mine,
        Some(raw) => View::parse(raw).ok_or_else(|| {
            Error::bad_request(
                "invalid_filter",
                "view is one of mine, overdue, due_this_week",
            )
        })?,
    };
    let chrome = Chrome::new(&state, &ctx, "tasks").await?;
    let items = tasks::list(
        &state,
        &ctx,
        &Filter {
            view: Some(view),
            limit: LIMIT,
            ..Filter::default()
        },
    )
    .await?;
    let mut tx = ctx.begin(&state).await?;
    let staff = crate::tenants::members::assignable(&mut tx).await?;
    tx.commit().await?;
    let name = |id: Option<Uuid>| {
        id.and_then(|id| staff.iter().find(|(m, _)| *m == id))
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    };
    let can_see_tickets = ctx.role.can(Permission::TicketsRead);
    let rows = items
        .into_iter()
        .map(|t| Row {
            id: t.id,
            due: t.due_at.map(readable).unwrap_or_default(),
            due_iso: t.due_at.map(rfc3339).unwrap_or_default(),
            overdue: t.overdue,
            assignee: name(t.assignee_id),
            ticket_href: t
                .ticket_id
                .filter(|_| can_see_tickets)
                .map(|id| format!("/app/tickets/{id}"))
                .unwrap_or_default(),
            title: t.title,
            notes: t.notes,
        })
        .collect();
    let assignees = assignee_choices(&staff, ctx.member_id);
    Ok(render(&ListPage {
        chrome,
        can_write: ctx.role.can(Permission::TasksWrite),
        view: view.as_str(),
        tabs: View::ALL
            .iter()
            .map(|v| Tab {
                href: href(*v),
                label: view_label(*v),
                current: *v == view,
            })
            .collect(),
        rows,
        assignees,
        empty: match view {
            View::Mine => "Nothing on your list.",
            View::Overdue => "Nothing is overdue.",
            View::DueThisWeek => "Nothing is due this week.",
        },
    }))
}

/// The new-task form's assignee choices: the member first, as "Me", then the other staff.
pub(super) fn assignee_choices(staff: &[(Uuid, String)], me: Uuid) -> Vec<(String, String)> {
    let mut choices = vec![("me".to_string(), "Me".to_string())];
    choices.extend(
        staff
            .iter()
            .filter(|(m, _)| *m != me)
            .map(|(m, n)| (m.to_string(), n.clone())),
    );
    choices
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NewForm {
    title: String,
    notes: String,
    /// A date (`2026-12-24`) or empty.
    due: String,
    /// `me` or a member's id.
    assignee: String,
    ticket_id: String,
    /// Set by the account page's form, which the member goes back to.
    account_id: String,
}

/// `POST /app/tasks`.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<NewForm>,
) -> Result<Response> {
    let bad = |m: String| Error::bad_request("invalid_form", m);
    let due_at = match form.due.trim() {
        "" => None,
        raw => Some(Some(parse_when(raw).map_err(bad)?)),
    };
    let assignee_id = match form.assignee.trim() {
        "" | "me" => Some(ctx.member_id),
        raw => Some(Uuid::parse_str(raw).map_err(|_| bad("assignee is a member's id".into()))?),
    };
    let ticket_id = match form.ticket_id.trim() {
        "" => None,
        raw => Some(Uuid::parse_str(raw).map_err(|_| Error::NotFound)?),
    };
    let account_id = match form.account_id.trim() {
        "" => None,
        raw => Some(Uuid::parse_str(raw).map_err(|_| Error::NotFound)?),
    };
    tasks::create(
        &state,
        &ctx,
        NewTask {
            title: form.title,
            notes: Some(form.notes),
            due_at,
            assignee_id,
            ticket_id,
            account_id,
            ..NewTask::default()
        },
    )
    .await?;
    match account_id {
        Some(account) => Ok(see_other(&format!("/app/accounts/{account}"))),
        None => Ok(see_other(&href(View::Mine))),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CompleteForm {
    /// The view to go back to.
    view: String,
}

/// `POST /app/tasks/{id}/complete`.
pub async fn complete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<CompleteForm>,
) -> Result<Response> {
    tasks::set_done(&state, &ctx, id, true).await?;
    let view = View::parse(form.view.trim()).unwrap_or(View::Mine);
    Ok(see_other(&href(view)))
}
