//! Tasks: the team's to-dos, each with a due date and an assignee, about an account, a contact,
//! a ticket or a deal. Views: the caller's open tasks, the overdue ones, the ones due this week.
//! Creating, changing, completing and reopening are audited (AUD-1).

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::tickets::parse_when;
use super::{begin, long_text, one_line, partner_scope};
use crate::audit::AuditEvent;
use crate::crm::accounts::{self, like_pattern};
use crate::crm::{contacts, page_limit};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Page, Path, Query};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::*;
    api.endpoint(
        Method::GET,
        "/api/v1/tasks",
        Requires(TasksRead),
        (
            "tasks",
            "List tasks: mine, overdue, due this week, or by filters (a partner sees the shared ones only)",
        ),
        Contract::new()
            .query::<ListQuery>()
            .ok_page::<TaskView>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit")
            .error(StatusCode::BAD_REQUEST, "invalid_filter"),
        list_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tasks",
        Requires(TasksWrite),
        ("tasks", "Create a task"),
        Contract::new()
            .body::<NewTask>()
            .created::<TaskView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::NOT_FOUND, "not_found"),
        create_route,
    )
    .endpoint(
        Method::GET,
        "/api/v1/tasks/{task_id}",
        Requires(TasksRead),
        ("tasks", "Show a task"),
        Contract::new().ok::<TaskView>(),
        show_route,
    )
    .endpoint(
        Method::PATCH,
        "/api/v1/tasks/{task_id}",
        Requires(TasksWrite),
        ("tasks", "Change a task: an absent field stays, `null` clears it"),
        Contract::new()
            .body::<TaskChanges>()
            .ok::<TaskView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text"),
        update_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tasks/{task_id}/complete",
        Requires(TasksWrite),
        ("tasks", "Mark a task done"),
        Contract::new()
            .ok::<TaskView>()
            .error(StatusCode::CONFLICT, "already_completed"),
        complete_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tasks/{task_id}/reopen",
        Requires(TasksWrite),
        ("tasks", "Reopen a done task"),
        Contract::new()
            .ok::<TaskView>()
            .error(StatusCode::CONFLICT, "not_completed"),
        reopen_route,
    )
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Task)]
pub struct TaskView {
    pub id: Uuid,
    pub title: String,
    pub notes: String,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub due_at: Option<OffsetDateTime>,
    #[schema(required = true)]
    pub assignee_id: Option<Uuid>,
    #[schema(required = true)]
    pub account_id: Option<Uuid>,
    #[schema(required = true)]
    pub contact_id: Option<Uuid>,
    #[schema(required = true)]
    pub ticket_id: Option<Uuid>,
    #[schema(required = true)]
    pub deal_id: Option<Uuid>,
    /// Shown to the partner organisation of its account.
    pub shared: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub completed_at: Option<OffsetDateTime>,
    #[schema(required = true)]
    pub completed_by: Option<Uuid>,
    /// Open past its due time.
    pub overdue: bool,
    #[schema(required = true)]
    pub created_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One task of the caller's tenant (and, for a partner, shared with it), or 404.
pub async fn fetch(conn: &mut PgConnection, partner: Option<Uuid>, id: Uuid) -> Result<TaskView> {
    sqlx::query_as!(
        TaskView,
        r#"SELECT t.id, t.title, t.notes, t.due_at, t.assignee_id, t.account_id, t.contact_id,
                  t.ticket_id, t.deal_id, t.shared, t.completed_at, t.completed_by,
                  coalesce(t.completed_at IS NULL AND t.due_at < now(), false) AS "overdue!",
                  t.created_by, t.created_at, t.updated_at
           FROM task t
           WHERE t.id = $1 AND t.tenant_id = current_tenant_id()
             AND ($2::uuid IS NULL OR (t.shared AND EXISTS (
                    SELECT 1 FROM account a WHERE a.tenant_id = t.tenant_id
                      AND a.id = t.account_id AND a.partner_org_id = $2)))"#,
        id,
        partner
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

/// The three everyday views of the task list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The caller's open tasks.
    Mine,
    /// Open tasks past their due time.
    Overdue,
    /// Open tasks due from the start of this week (Monday, UTC) to its end.
    DueThisWeek,
}

impl View {
    pub const ALL: [View; 3] = [View::Mine, View::Overdue, View::DueThisWeek];

    pub const fn as_str(self) -> &'static str {
        match self {
            View::Mine => "mine",
            View::Overdue => "overdue",
            View::DueThisWeek => "due_this_week",
        }
    }

    pub fn parse(raw: &str) -> Option<View> {
        View::ALL.into_iter().find(|v| v.as_str() == raw)
    }
}

/// Monday 00:00 UTC of the week `now` is in, and the Monday after.
pub fn this_week(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let now = now.to_offset(time::UtcOffset::UTC);
    let monday = now.date() - Duration::days(now.weekday().number_days_from_monday().into());
    let start = monday.midnight().assume_utc();
    (start, start + Duration::weeks(1))
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub view: Option<View>,
    /// `Some(false)`: open only; `Some(true)`: done only.
    pub done: Option<bool>,
    pub assignee_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub ticket_id: Option<Uuid>,
    pub deal_id: Option<Uuid>,
    pub q: Option<String>,
    pub due_after: Option<OffsetDateTime>,
    pub due_before: Option<OffsetDateTime>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

pub async fn list(db: &impl AsRef<Db>, ctx: &Ctx, filter: &Filter) -> Result<Vec<TaskView>> {
    let partner = partner_scope(ctx)?;
    let now = OffsetDateTime::now_utc();
    let mut f = filter.clone();
    match f.view {
        Some(View::Mine) => {
            f.assignee_id = Some(ctx.member_id);
            f.done = Some(false);
        }
        Some(View::Overdue) => {
            f.done = Some(false);
            f.due_before = Some(f.due_before.map_or(now, |d| d.min(now)));
        }
        Some(View::DueThisWeek) => {
            let (start, end) = this_week(now);
            f.done = Some(false);
            f.due_after = Some(f.due_after.map_or(start, |d| d.max(start)));
            f.due_before = Some(f.due_before.map_or(end, |d| d.min(end)));
        }
        None => {}
    }
    let pattern = f.q.as_deref().map(like_pattern);
    let mut tx = begin(db, ctx).await?;
    let items = sqlx::query_as!(
        TaskView,
        r#"SELECT t.id, t.title, t.notes, t.due_at, t.assignee_id, t.account_id, t.contact_id,
                  t.ticket_id, t.deal_id, t.shared, t.completed_at, t.completed_by,
                  coalesce(t.completed_at IS NULL AND t.due_at < now(), false) AS "overdue!",
                  t.created_by, t.created_at, t.updated_at
           FROM task t
           WHERE t.tenant_id = $1
             AND ($2::uuid IS NULL OR (t.shared AND EXISTS (
                    SELECT 1 FROM account a WHERE a.tenant_id = t.tenant_id
                      AND a.id = t.account_id AND a.partner_org_id = $2)))
             AND ($3::bool IS NULL OR (t.completed_at IS NOT NULL) = $3)
             AND ($4::uuid IS NULL OR t.assignee_id = $4)
             AND ($5::uuid IS NULL OR t.account_id = $5)
             AND ($6::uuid IS NULL OR t.contact_id = $6)
             AND ($7::uuid IS NULL OR t.ticket_id = $7)
             AND ($8::text IS NULL OR t.title ILIKE $8 OR t.notes ILIKE $8)
             AND ($9::timestamptz IS NULL OR t.due_at >= $9)
             AND ($10::timestamptz IS NULL OR t.due_at < $10)
             AND ($11::uuid IS NULL OR t.id < $11)
             AND ($13::uuid IS NULL OR t.deal_id = $13)
           ORDER BY t.id DESC
           LIMIT $12"#,
        ctx.tenant_id,
        partner,
        f.done,
        f.assignee_id,
        f.account_id,
        f.contact_id,
        f.ticket_id,
        pattern,
        f.due_after,
        f.due_before,
        f.after,
        f.limit,
        f.deal_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(items)
}

pub async fn show(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid) -> Result<TaskView> {
    let partner = partner_scope(ctx)?;
    let mut tx = begin(db, ctx).await?;
    let task = fetch(&mut tx, partner, id).await?;
    tx.commit().await?;
    Ok(task)
}

fn when<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<OffsetDateTime>>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    raw.map(|s| parse_when(&s).map_err(serde::de::Error::custom))
        .transpose()
        .map(Some)
}

/// A task to create. Linked to a contact, ticket or deal without an account, it takes theirs.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewTask)]
pub struct NewTask {
    #[schema(min_length = 1, max_length = 300, pattern = "$one_line")]
    pub title: String,
    #[schema(max_length = 10000)]
    pub notes: Option<String>,
    /// RFC 3339, or a date (midnight UTC).
    #[serde(default, deserialize_with = "when")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub due_at: Option<Option<OffsetDateTime>>,
    pub assignee_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub ticket_id: Option<Uuid>,
    pub deal_id: Option<Uuid>,
    pub shared: Option<bool>,
}

/// The fields to change; an absent field stays as it is, `null` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TaskChanges)]
pub struct TaskChanges {
    #[schema(min_length = 1, max_length = 300, pattern = "$one_line")]
    pub title: Option<String>,
    #[schema(max_length = 10000)]
    pub notes: Option<String>,
    #[serde(default, deserialize_with = "when")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub due_at: Option<Option<OffsetDateTime>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub assignee_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub account_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub contact_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub ticket_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub deal_id: Option<Option<Uuid>>,
    pub shared: Option<bool>,
}

#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn create(db: &impl AsRef<Db>, ctx: &Ctx, new: NewTask) -> Result<TaskView> {
    let title = one_line("title", &new.title, 300)?;
    let notes = long_text("notes", new.notes.as_deref().unwrap_or(""), 10000)?;
    let mut tx = ctx.begin(db).await?;
    let contact = match new.contact_id {
        Some(id) => Some(contacts::fetch(&mut tx, id).await?),
        None => None,
    };
    let ticket = match new.ticket_id {
        Some(id) => Some(super::tickets::fetch(&mut tx, None, id).await?),
        None => None,
    };
    let deal = match new.deal_id {
        Some(id) => Some(super::deals::fetch(&mut tx, None, id).await?),
        None => None,
    };
    let account_id = match new.account_id {
        Some(id) => Some(accounts::fetch(&mut tx, id).await?.id),
        None => contact
            .as_ref()
            .and_then(|c| c.account_id)
            .or(ticket.as_ref().and_then(|t| t.account_id))
            .or(deal.as_ref().and_then(|d| d.account_id)),
    };
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO task (id, tenant_id, title, notes, due_at, assignee_id, account_id, contact_id,
                           ticket_id, shared, created_by, deal_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        id,
        ctx.tenant_id,
        title,
        notes,
        new.due_at.flatten(),
        new.assignee_id,
        account_id,
        new.contact_id,
        new.ticket_id,
        new.shared.unwrap_or(false),
        ctx.member_id,
        new.deal_id
    )
    .execute(&mut *tx)
    .await?;
    let task = fetch(&mut tx, None, id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("task.created", "task", id).after(&task),
    )
    .await?;
    tx.commit().await?;
    Ok(task)
}

#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, task_id = %id))]
pub async fn update(
    db: &impl AsRef<Db>,
    ctx: &Ctx,
    id: Uuid,
    changes: TaskChanges,
) -> Result<TaskView> {
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, None, id).await?;
    let title = match &changes.title {
        Some(t) => one_line("title", t, 300)?,
        None => before.title.clone(),
    };
    let notes = match &changes.notes {
        Some(n) => long_text("notes", n, 10000)?,
        None => before.notes.clone(),
    };
    if let Some(Some(contact)) = changes.contact_id {
        contacts::fetch(&mut tx, contact).await?;
    }
    if let Some(Some(account)) = changes.account_id {
        accounts::fetch(&mut tx, account).await?;
    }
    if let Some(Some(ticket)) = changes.ticket_id {
        super::tickets::fetch(&mut tx, None, ticket).await?;
    }
    if let Some(Some(deal)) = changes.deal_id {
        super::deals::fetch(&mut tx, None, deal).await?;
    }
    sqlx::query!(
        "UPDATE task SET title = $2, notes = $3, due_at = $4, assignee_id = $5, account_id = $6,
                contact_id = $7, ticket_id = $8, shared = $9, deal_id = $10, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        title,
        notes,
        changes.due_at.unwrap_or(before.due_at),
        changes.assignee_id.unwrap_or(before.assignee_id),
        changes.account_id.unwrap_or(before.account_id),
        changes.contact_id.unwrap_or(before.contact_id),
        changes.ticket_id.unwrap_or(before.ticket_id),
        changes.shared.unwrap_or(before.shared),
        changes.deal_id.unwrap_or(before.deal_id)
    )
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, None, id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("task.updated", "task", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Marks a task done (`done`) or open again, audited as `task.completed` / `task.reopened`.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, task_id = %id))]
pub async fn set_done(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid, done: bool) -> Result<TaskView> {
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, None, id).await?;
    match (done, before.completed_at.is_some()) {
        (true, true) => {
            return Err(Error::conflict(
                "already_completed",
                "the task is already done",
            ))
        }
        (false, false) => return Err(Error::conflict("not_completed", "the task is not done")),
        _ => {}
    }
    sqlx::query!(
        "UPDATE task SET completed_at = CASE WHEN $2 THEN now() END,
                completed_by = CASE WHEN $2 THEN $3::uuid END, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        done,
        ctx.member_id
    )
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, None, id).await?;
    let action = if done {
        "task.completed"
    } else {
        "task.reopened"
    };
    ctx.audit(
        &mut tx,
        AuditEvent::new(action, "task", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

// ---- Routes ----

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// `mine`, `overdue` or `due_this_week` (each of open tasks).
    #[param(pattern = "^(mine|overdue|due_this_week)$")]
    view: Option<String>,
    /// Only the done (`true`) or only the open (`false`).
    done: Option<bool>,
    assignee_id: Option<Uuid>,
    account_id: Option<Uuid>,
    contact_id: Option<Uuid>,
    ticket_id: Option<Uuid>,
    deal_id: Option<Uuid>,
    /// A case-insensitive part of the title or notes.
    q: Option<String>,
    /// RFC 3339 or a date: due at or after.
    #[param(value_type = Option<String>, format = DateTime)]
    due_after: Option<String>,
    /// RFC 3339 or a date: due before.
    #[param(value_type = Option<String>, format = DateTime)]
    due_before: Option<String>,
    /// The last id of the previous page (its `next_cursor`).
    after: Option<Uuid>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

fn time_filter(field: &str, raw: Option<&str>) -> Result<Option<OffsetDateTime>> {
    raw.map(|r| {
        parse_when(r).map_err(|e| Error::bad_request("invalid_filter", format!("{field}: {e}")))
    })
    .transpose()
}

async fn list_route(
    State(db): State<Db>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<TaskView>>> {
    let limit = page_limit(query.limit)?;
    let view = query
        .view
        .as_deref()
        .map(|v| {
            View::parse(v).ok_or_else(|| {
                Error::bad_request(
                    "invalid_filter",
                    "view is one of mine, overdue, due_this_week",
                )
            })
        })
        .transpose()?;
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(Error::bad_request(
            "invalid_filter",
            "search for at most 200 characters",
        ));
    }
    let filter = Filter {
        view,
        done: query.done,
        assignee_id: query.assignee_id,
        account_id: query.account_id,
        contact_id: query.contact_id,
        ticket_id: query.ticket_id,
        deal_id: query.deal_id,
        q: query.q,
        due_after: time_filter("due_after", query.due_after.as_deref())?,
        due_before: time_filter("due_before", query.due_before.as_deref())?,
        after: query.after,
        limit,
    };
    let items = list(&db, &ctx, &filter).await?;
    Ok(Json(Page::new(items, limit, |t| t.id)))
}

async fn create_route(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<NewTask>,
) -> Result<(StatusCode, Json<TaskView>)> {
    Ok((StatusCode::CREATED, Json(create(&db, &ctx, body).await?)))
}

async fn show_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<TaskView>> {
    Ok(Json(show(&db, &ctx, id).await?))
}

async fn update_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<TaskChanges>,
) -> Result<Json<TaskView>> {
    Ok(Json(update(&db, &ctx, id, body).await?))
}

async fn complete_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<TaskView>> {
    Ok(Json(set_done(&db, &ctx, id, true).await?))
}

async fn reopen_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<TaskView>> {
    Ok(Json(set_done(&db, &ctx, id, false).await?))
}

/// The tasks about a contact, directly or through one of their tickets: for their export
/// (DSR-1).
pub async fn export_rows(
    conn: &mut PgConnection,
    contact_id: Uuid,
    ticket_ids: &[Uuid],
) -> Result<Vec<serde_json::Value>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT to_jsonb(t) AS "row!" FROM task t
           WHERE t.tenant_id = current_tenant_id()
             AND (t.contact_id = $1 OR t.ticket_id = ANY($2))
           ORDER BY t.created_at, t.id"#,
        contact_id,
        ticket_ids
    )
    .fetch_all(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_week_runs_from_monday_to_the_next_monday() {
        let thursday = time::macros::datetime!(2026-12-10 15:00 UTC);
        let (start, end) = this_week(thursday);
        assert_eq!(start, time::macros::datetime!(2026-12-07 00:00 UTC));
        assert_eq!(end, time::macros::datetime!(2026-12-14 00:00 UTC));
    }
}
