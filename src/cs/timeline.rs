//! One account's timeline (#17 item 4): the events every domain holds about the account,
//! merged newest first, paged by an opaque cursor. Each source answers its own newest `limit`
//! events after the cursor; the merge keeps the newest `limit` of them all, so a page costs
//! one indexed query per source whatever the account's history. A source is one function
//! returning `crm::timeline::Event`s: deals, survey answers and health changes plug in here.
//!
//! The caller sees the sources its role may read (the same permissions as their own lists).

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::crm::timeline::{newest_first, Cursor, Event};
use crate::db::Db;
use crate::error::Result;
use crate::http::{Access, Api, Contract, Ctx, Json, Page, Path, Query};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    api.endpoint(
        Method::GET,
        "/api/v1/accounts/{account_id}/timeline",
        Access::Requires(Permission::ContactsRead),
        (
            "crm",
            "An account's timeline, newest first: its conversations, tickets, tasks and deals",
        ),
        Contract::new()
            .query::<TimelineQuery>()
            .ok_page::<Event>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit")
            .error(StatusCode::BAD_REQUEST, "invalid_cursor"),
        timeline_route,
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// The previous page's `next_cursor`.
    #[param(
        pattern = "^[0-9]{1,16}~[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}~[a-z._]{1,64}$"
    )]
    pub after: Option<String>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

async fn timeline_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(account_id): Path<Uuid>,
    Query(query): Query<TimelineQuery>,
) -> Result<Json<Page<Event, String>>> {
    let limit = crate::crm::page_limit(query.limit)?;
    let after = query.after.as_deref().map(Cursor::parse).transpose()?;
    let mut tx = super::begin(&db, &ctx).await?;
    let events = for_account(&mut tx, &ctx, account_id, after.as_ref(), limit).await?;
    tx.commit().await?;
    Ok(Json(Page::new(events, limit, |e| e.cursor().encode())))
}

/// Up to `limit` events of the account after `after`, newest first; 404 for an account the
/// caller's tenant does not have.
pub async fn for_account(
    conn: &mut PgConnection,
    ctx: &Ctx,
    account_id: Uuid,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Event>> {
    crate::crm::accounts::fetch(&mut *conn, account_id).await?;
    let mut events = Vec::new();
    if ctx.role.can(Permission::ConversationsRead) {
        events.extend(
            crate::conversations::timeline::events(&mut *conn, account_id, after, limit).await?,
        );
    }
    if ctx.role.can(Permission::TicketsRead) {
        events.extend(tickets(&mut *conn, account_id, after, limit).await?);
    }
    if ctx.role.can(Permission::TasksRead) {
        events.extend(tasks(&mut *conn, account_id, after, limit).await?);
    }
    if ctx.role.can(Permission::DealsRead) {
        events.extend(deals(&mut *conn, account_id, after, limit).await?);
    }
    events.sort_by(newest_first);
    events.truncate(limit as usize);
    Ok(events)
}

/// Each ticket of the account opened, and solved (when it was).
async fn tickets(
    conn: &mut PgConnection,
    account_id: Uuid,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Event>> {
    let (at, id, kind) = Cursor::parts(after);
    let rows = sqlx::query!(
        r#"SELECT e.at AS "at!", e.kind AS "kind!", e.id AS "id!", e.subject AS "subject!",
                  e.status AS "status!", e.contact_id
           FROM (
               SELECT created_at AS at, 'ticket.opened' AS kind, id, subject, status, contact_id
               FROM ticket WHERE tenant_id = current_tenant_id() AND account_id = $1
               UNION ALL
               SELECT solved_at, 'ticket.solved', id, subject, status, contact_id
               FROM ticket WHERE tenant_id = current_tenant_id() AND account_id = $1
                 AND solved_at IS NOT NULL
           ) e
           WHERE $2::timestamptz IS NULL OR (e.at, e.id, e.kind) < ($2, $3::uuid, $4::text)
           ORDER BY e.at DESC, e.id DESC, e.kind DESC
           LIMIT $5"#,
        account_id,
        at,
        id,
        kind,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Event {
            title: if r.kind == "ticket.opened" {
                format!("Ticket opened: {}", r.subject)
            } else {
                format!("Ticket solved: {}", r.subject)
            },
            at: r.at,
            kind: r.kind,
            entity_type: "ticket".into(),
            entity_id: r.id,
            status: Some(r.status),
            contact_id: r.contact_id,
        })
        .collect())
}

/// Each task of the account created, and completed (when it was).
async fn tasks(
    conn: &mut PgConnection,
    account_id: Uuid,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Event>> {
    let (at, id, kind) = Cursor::parts(after);
    let rows = sqlx::query!(
        r#"SELECT e.at AS "at!", e.kind AS "kind!", e.id AS "id!", e.title AS "title!",
                  e.done AS "done!", e.contact_id
           FROM (
               SELECT created_at AS at, 'task.created' AS kind, id, title,
                      completed_at IS NOT NULL AS done, contact_id
               FROM task WHERE tenant_id = current_tenant_id() AND account_id = $1
               UNION ALL
               SELECT completed_at, 'task.completed', id, title, true, contact_id
               FROM task WHERE tenant_id = current_tenant_id() AND account_id = $1
                 AND completed_at IS NOT NULL
           ) e
           WHERE $2::timestamptz IS NULL OR (e.at, e.id, e.kind) < ($2, $3::uuid, $4::text)
           ORDER BY e.at DESC, e.id DESC, e.kind DESC
           LIMIT $5"#,
        account_id,
        at,
        id,
        kind,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Event {
            title: if r.kind == "task.created" {
                format!("Task: {}", r.title)
            } else {
                format!("Task done: {}", r.title)
            },
            at: r.at,
            kind: r.kind,
            entity_type: "task".into(),
            entity_id: r.id,
            status: Some(if r.done { "done" } else { "open" }.to_string()),
            contact_id: r.contact_id,
        })
        .collect())
}

/// Each deal of the account opened, moved from one stage to another, and won or lost.
async fn deals(
    conn: &mut PgConnection,
    account_id: Uuid,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Event>> {
    let (at, id, kind) = Cursor::parts(after);
    let rows = sqlx::query!(
        r#"SELECT e.at AS "at!", e.kind AS "kind!", e.id AS "id!", e.name AS "name!",
                  e.value_minor AS "value_minor!", e.currency AS "currency!", e.status AS "status!",
                  e.stage
           FROM (
               SELECT created_at AS at, 'deal.opened' AS kind, id, name, value_minor, currency,
                      status, NULL::text AS stage
               FROM deal WHERE tenant_id = current_tenant_id() AND account_id = $1
               UNION ALL
               SELECT c.changed_at, 'deal.moved', d.id, d.name, d.value_minor, d.currency,
                      d.status, c.to_stage_name
               FROM deal_stage_change c JOIN deal d ON d.id = c.deal_id
               WHERE d.tenant_id = current_tenant_id() AND d.account_id = $1
                 AND c.tenant_id = current_tenant_id()
                 AND (c.from_stage_id IS NOT NULL OR c.from_stage_name IS NOT NULL)
               UNION ALL
               SELECT closed_at, 'deal.' || status, id, name, value_minor, currency, status, NULL
               FROM deal WHERE tenant_id = current_tenant_id() AND account_id = $1
                 AND closed_at IS NOT NULL
           ) e
           WHERE $2::timestamptz IS NULL OR (e.at, e.id, e.kind) < ($2, $3::uuid, $4::text)
           ORDER BY e.at DESC, e.id DESC, e.kind DESC
           LIMIT $5"#,
        account_id,
        at,
        id,
        kind,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let value = super::deals::display_value(r.value_minor, &r.currency);
            let title = match r.kind.as_str() {
                "deal.opened" => format!("Deal opened: {} ({value})", r.name),
                "deal.moved" => format!(
                    "Deal {} moved to {}",
                    r.name,
                    r.stage.as_deref().unwrap_or("another stage")
                ),
                "deal.won" => format!("Deal won: {} ({value})", r.name),
                _ => format!("Deal lost: {}", r.name),
            };
            Event {
                title,
                at: r.at,
                kind: r.kind,
                entity_type: "deal".into(),
                entity_id: r.id,
                status: Some(r.status),
                contact_id: None,
            }
        })
        .collect())
}
