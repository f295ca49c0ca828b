//! Reading the audit log: chain verification (AUD-3), search by actor, entity, action, time
//! and execution (AUD-4), and exports (`export.rs`).

use axum::extract::{FromRef, State};
use axum::http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Verification;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::Ctx;
use crate::http::{Access, Api, Contract, Json, Query};
use crate::rbac::Permission;
use axum::http::StatusCode;
use utoipa::{IntoParams, ToSchema};

/// `enqueue` queues the job that writes an export (see [`super::export::JOB`]).
pub fn routes<S>(api: Api<S>, enqueue: super::export::Enqueue) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::GET,
        "/api/v1/audit/verify",
        Requires(Permission::AuditRead),
        ("audit", "Verify the tenant's audit hash chain"),
        Contract::new().ok::<Verification>(),
        verify,
    )
    .endpoint(
        Method::GET,
        "/api/v1/audit/events",
        Requires(Permission::AuditRead),
        ("audit", "Search audit events, newest first"),
        Contract::new()
            .query::<Search>()
            .ok::<Page>()
            .error(StatusCode::BAD_REQUEST, "invalid_filter")
            .error(StatusCode::BAD_REQUEST, "invalid_limit"),
        list,
    )
    .endpoint(
        Method::POST,
        "/api/v1/audit/exports",
        Requires(Permission::AuditExport),
        ("audit", "Export the (filtered) audit log as CSV or JSON"),
        // The handler reads the request itself, so that a bad format answers `invalid_format`
        // and any other bad or unknown field `invalid_filter`.
        Contract::new()
            .body::<super::export::ExportRequest>()
            .returns::<super::export::ExportView>(StatusCode::ACCEPTED)
            .error(StatusCode::BAD_REQUEST, "invalid_format")
            .error(StatusCode::BAD_REQUEST, "invalid_filter"),
        move |State(db): State<Db>, ctx: Ctx, Json(body): Json<Map<String, Value>>| {
            super::export::create(db, ctx, body, enqueue)
        },
    )
    .endpoint(
        Method::GET,
        "/api/v1/audit/exports",
        Requires(Permission::AuditExport),
        ("audit", "List audit exports and their progress"),
        Contract::new().ok_list::<super::export::ExportView>(),
        super::export::list,
    )
    .endpoint(
        Method::GET,
        "/api/v1/audit/exports/{export_id}",
        Requires(Permission::AuditExport),
        ("audit", "One audit export and its progress"),
        Contract::new().ok::<super::export::ExportView>(),
        super::export::show,
    )
    .endpoint(
        Method::GET,
        "/api/v1/audit/exports/{export_id}/download",
        Requires(Permission::AuditExport),
        ("audit", "Download a finished audit export"),
        Contract::new()
            .returns_media(
                StatusCode::OK,
                "text/csv",
                "The export's events, as CSV or as a JSON array, by the format it was asked in",
            )
            .ok_list::<EventView>()
            .error(StatusCode::GONE, "gone")
            .error(StatusCode::CONFLICT, "export_failed")
            .error(StatusCode::CONFLICT, "export_not_ready"),
        super::export::download,
    )
}

async fn verify(State(db): State<Db>, ctx: Ctx) -> Result<Json<Verification>> {
    Ok(Json(super::verify(&db.app, ctx.tenant_id).await?))
}

/// What to look for in the audit log (AUD-4). Shared by the listing and exports, so an
/// export holds exactly what the same search shows.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    /// An exact action, e.g. `member.role_changed`.
    pub action: Option<String>,
    /// Every action starting with this, e.g. `review.` or `auth.login`.
    pub action_prefix: Option<String>,
    pub execution_id: Option<Uuid>,
    /// Inclusive.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    /// Exclusive.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
}

impl Filter {
    /// Refuses searches that cannot mean anything, with a clear error.
    pub fn check(&self) -> Result<()> {
        let texts = [
            ("actor_type", &self.actor_type),
            ("actor_id", &self.actor_id),
            ("entity_type", &self.entity_type),
            ("entity_id", &self.entity_id),
            ("action", &self.action),
            ("action_prefix", &self.action_prefix),
        ];
        for (name, value) in texts {
            if value
                .as_deref()
                .is_some_and(|v| v.is_empty() || v.chars().count() > 200)
            {
                return Err(Error::bad_request(
                    "invalid_filter",
                    format!("{name} must be 1 to 200 characters"),
                ));
            }
        }
        // A range that ends before it starts is not refused: it matches nothing, like any
        // filter nothing meets (a schema cannot state the order of two fields).
        Ok(())
    }
}

/// The listing's query: the filter plus the cursor. Spelled out rather than flattened, because
/// serde's flatten cannot refuse unknown fields nor parse numbers from a query string.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct Search {
    /// `member`, `api_token`, `system`...
    #[param(min_length = 1, max_length = 200)]
    actor_type: Option<String>,
    #[param(min_length = 1, max_length = 200)]
    actor_id: Option<String>,
    #[param(min_length = 1, max_length = 200)]
    entity_type: Option<String>,
    #[param(min_length = 1, max_length = 200)]
    entity_id: Option<String>,
    /// An exact action, e.g. `member.role_changed`.
    #[param(min_length = 1, max_length = 200)]
    action: Option<String>,
    /// Every action starting with this, e.g. `review.` or `auth.login`.
    #[param(min_length = 1, max_length = 200)]
    action_prefix: Option<String>,
    execution_id: Option<Uuid>,
    /// Inclusive.
    #[serde(default, with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    /// Exclusive; after `from`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
    /// Return events with a sequence number below this (the `next_cursor` of a previous page).
    before_seq: Option<i64>,
    /// 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

impl Search {
    fn split(self) -> (Filter, Option<i64>, Option<i64>) {
        let filter = Filter {
            actor_type: self.actor_type,
            actor_id: self.actor_id,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            action: self.action,
            action_prefix: self.action_prefix,
            execution_id: self.execution_id,
            from: self.from,
            to: self.to,
        };
        (filter, self.before_seq, self.limit)
    }
}

/// One audit entry. `before` and `after` are free-form: the entity as it was and became.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub struct EventView {
    pub seq: i64,
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub execution_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = AuditPage)]
struct Page {
    events: Vec<EventView>,
    /// Ask for the next page with this as `before_seq`; `null` on the last page.
    next_cursor: Option<i64>,
}

async fn list(State(db): State<Db>, ctx: Ctx, Query(query): Query<Search>) -> Result<Json<Page>> {
    let (filter, before_seq, limit) = query.split();
    filter.check()?;
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_limit",
            "limit must be 1 to 1000",
        ));
    }
    let mut tx = ctx.begin(&db).await?;
    let events: Vec<EventView> = search(&mut tx, ctx.tenant_id, &filter, before_seq, limit)
        .await?
        .into_iter()
        .map(|e| e.event)
        .collect();
    tx.commit().await?;
    let next_cursor = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(Page {
        events,
        next_cursor,
    }))
}

/// One entry as the staff pages show it: the event, and whether a data subject's erasure took
/// its payload (DSR-3), so an empty before/after reads as erased, not as never recorded.
pub struct Entry {
    pub event: EventView,
    pub erased: bool,
}

/// The tenant's events matching `filter`, newest first, below `before_seq` when given: the
/// search behind the API's listing and the audit page.
pub async fn search(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    filter: &Filter,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>> {
    // The filter itself is `audit_search` (migration 0007), shared with the exports.
    let rows = sqlx::query!(
        r#"SELECT seq AS "seq!", id AS "id!", occurred_at AS "occurred_at!", actor_type AS "actor_type!",
                actor_id, action AS "action!", entity_type AS "entity_type!", entity_id,
                before, after, ip, user_agent, request_id, execution_id,
                erased_at IS NOT NULL AS "erased!"
         FROM audit_search($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         WHERE ($11::bigint IS NULL OR seq < $11)
         ORDER BY seq DESC
         LIMIT $12"#,
        tenant_id,
        filter.actor_type,
        filter.actor_id,
        filter.entity_type,
        filter.entity_id,
        filter.action,
        filter.action_prefix,
        filter.execution_id,
        filter.from,
        filter.to,
        before_seq,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Entry {
            erased: r.erased,
            event: EventView {
                seq: r.seq,
                id: r.id,
                occurred_at: r.occurred_at,
                actor_type: r.actor_type,
                actor_id: r.actor_id,
                action: r.action,
                entity_type: r.entity_type,
                entity_id: r.entity_id,
                before: r.before,
                after: r.after,
                ip: r.ip,
                user_agent: r.user_agent,
                request_id: r.request_id,
                execution_id: r.execution_id,
            },
        })
        .collect())
}

/// One of the caller's tenant's events by its id; another tenant's is not found.
pub async fn entry(conn: &mut PgConnection, id: Uuid) -> Result<Entry> {
    let r = sqlx::query!(
        r#"SELECT seq, id, occurred_at, actor_type, actor_id, action, entity_type, entity_id,
                  before, after, ip, user_agent, request_id, execution_id,
                  erased_at IS NOT NULL AS "erased!"
           FROM audit_event WHERE id = $1 AND tenant_id = current_tenant_id()"#,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)?;
    Ok(Entry {
        erased: r.erased,
        event: EventView {
            seq: r.seq,
            id: r.id,
            occurred_at: r.occurred_at,
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            action: r.action,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            before: r.before,
            after: r.after,
            ip: r.ip,
            user_agent: r.user_agent,
            request_id: r.request_id,
            execution_id: r.execution_id,
        },
    })
}
