//! Exports of the audit log (AUD-4): a member asks for the events matching a search as CSV or
//! JSON; a job writes the file in batches into Postgres, with visible progress; the file can be
//! downloaded until it expires (after the tenant's period for exports, seven days at most,
//! DSR-7); retention's purge then expires it here ([`expire`]): the content goes and the
//! download answers 410. Asking for and downloading an export are themselves audit events
//! (AUD-2).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::routes::{EventView, Filter};
use super::AuditEvent;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::Ctx;
use crate::http::{Json, Path};

/// The job kind that writes an export. Audit and the queue are both engines, neither below the
/// other, so audit does not name the queue: the application joins them (`app.rs`), handing the
/// routes an [`Enqueue`] and running [`run_job`] for this kind.
pub const JOB: &str = "audit.export";

/// Queues a job on the caller's transaction: tenant, kind, idempotency key, payload.
pub type Enqueue = for<'a> fn(
    &'a mut PgConnection,
    Uuid,
    &'static str,
    String,
    Value,
) -> BoxFuture<'a, sqlx::Result<()>>;

/// What writing an export came to, for the job that runs it.
#[derive(Debug)]
pub enum Written {
    Done,
    /// Failed this time and worth another try; on the last try the export is marked failed.
    Retry(String),
    /// The job names no export: no try will do better.
    Invalid(String),
}
/// Rows per batch: one chunk of the file and one progress update each.
pub const BATCH: i64 = 1000;
/// The longest an export may be kept, and how long it is kept unless the tenant shortened it
/// (DSR-7).
pub const MAX_DAYS: i32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ExportFormat)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    fn parse(raw: &str) -> Option<Format> {
        match raw {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// An export to write: its format, and the search it holds (the filters of
/// `GET /api/v1/audit/events`, beside `format`; all of them when none is given).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AuditExportRequest)]
pub struct ExportRequest {
    format: Format,
    /// `member`, `api_token`, `system`...
    #[schema(min_length = 1, max_length = 200)]
    actor_type: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    actor_id: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    entity_type: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    entity_id: Option<String>,
    /// An exact action, e.g. `member.role_changed`.
    #[schema(min_length = 1, max_length = 200)]
    action: Option<String>,
    /// Every action starting with this, e.g. `review.` or `auth.login`.
    #[schema(min_length = 1, max_length = 200)]
    action_prefix: Option<String>,
    execution_id: Option<Uuid>,
    /// Inclusive.
    #[serde(default, with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    /// Exclusive; after `from`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
}

impl ExportRequest {
    /// Reads a request, refusing a missing or unknown format with `invalid_format` and any
    /// other field it does not know, or a bad filter, with `invalid_filter`.
    fn parse(body: Map<String, Value>) -> Result<(Format, Filter)> {
        let known =
            matches!(body.get("format"), Some(Value::String(raw)) if Format::parse(raw).is_some());
        if !known {
            return Err(Error::bad_request(
                "invalid_format",
                "format must be \"csv\" or \"json\"",
            ));
        }
        let request: ExportRequest = serde_json::from_value(Value::Object(body))
            .map_err(|e| Error::bad_request("invalid_filter", e.to_string()))?;
        let filter = Filter {
            actor_type: request.actor_type,
            actor_id: request.actor_id,
            entity_type: request.entity_type,
            entity_id: request.entity_id,
            action: request.action,
            action_prefix: request.action_prefix,
            execution_id: request.execution_id,
            from: request.from,
            to: request.to,
        };
        filter.check()?;
        Ok((request.format, filter))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AuditExport)]
pub struct ExportView {
    pub id: Uuid,
    #[schema(value_type = Format)]
    pub format: String,
    /// The search the export holds, as it was asked.
    #[schema(value_type = Object)]
    pub filters: Value,
    /// `queued`, `running`, `done`, `failed` or `expired`.
    pub status: String,
    pub rows_total: Option<i64>,
    pub rows_done: i64,
    pub bytes: i64,
    pub error: Option<String>,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub purged_at: Option<OffsetDateTime>,
}

/// One of the caller's tenant's exports with its progress; another tenant's is not found.
pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<ExportView> {
    sqlx::query_as!(
        ExportView,
        "SELECT id, format, filters, status, rows_total, rows_done, bytes, error, requested_by,
                created_at, finished_at, expires_at, purged_at
         FROM audit_export WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

/// How many days the tenant keeps exports. The setting sits with the tenant's other retention
/// periods (`retention_policy`, changed through the retention API); what it means for an
/// export, when it expires and that its content then goes, is the export's own.
async fn period(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<i32> {
    let days = sqlx::query_scalar!(
        "SELECT exports_days FROM retention_policy WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(days.unwrap_or(MAX_DAYS))
}

/// Asks for an export; its job is queued with `enqueue` in the same transaction.
pub async fn create(
    db: Db,
    ctx: Ctx,
    body: Map<String, Value>,
    enqueue: Enqueue,
) -> Result<(StatusCode, Json<ExportView>)> {
    let (format, filter) = ExportRequest::parse(body)?;
    let filters = serde_json::to_value(&filter).map_err(anyhow::Error::from)?;
    let mut tx = ctx.begin(&db).await?;
    let days = period(&mut tx, ctx.tenant_id).await?;
    let id = Uuid::now_v7();
    let source = ctx.audit_source();
    let requested_by = format!(
        "{}:{}",
        source.actor_type,
        source.actor_id.as_deref().unwrap_or_default()
    );
    // The export covers the chain as it stands now; the request's own audit event comes after.
    sqlx::query!(
        "INSERT INTO audit_export (id, tenant_id, requested_by, format, filters, through_seq, expires_at)
         VALUES ($1, $2, $3, $4, $5,
                 coalesce((SELECT seq FROM audit_chain_head WHERE tenant_id = $2), 0),
                 now() + make_interval(days => $6))",
        id,
        ctx.tenant_id,
        requested_by,
        format.as_str(),
        filters,
        days
    )
    .execute(&mut *tx)
    .await?;
    enqueue(
        &mut tx,
        ctx.tenant_id,
        JOB,
        format!("audit-export:{id}"),
        json!({ "export_id": id }),
    )
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("audit.export_requested", "audit_export", id)
            .after(json!({ "format": format, "filters": filters })),
    )
    .await?;
    let view = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

pub async fn list(State(db): State<Db>, ctx: Ctx) -> Result<Json<Vec<ExportView>>> {
    let mut tx = ctx.begin(&db).await?;
    let rows = recent(&mut tx, ctx.tenant_id, 200).await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// The tenant's latest `limit` exports, newest first.
pub async fn recent(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    limit: i64,
) -> Result<Vec<ExportView>> {
    Ok(sqlx::query_as!(
        ExportView,
        "SELECT id, format, filters, status, rows_total, rows_done, bytes, error, requested_by,
                created_at, finished_at, expires_at, purged_at
         FROM audit_export WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT $2",
        tenant_id,
        limit
    )
    .fetch_all(conn)
    .await?)
}

pub async fn show(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ExportView>> {
    let mut tx = ctx.begin(&db).await?;
    let view = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(view))
}

/// Whether an export (of the audit log, or of a person's data) may be downloaded: past its
/// expiry it is gone (410), and only a finished one is there to take (409 otherwise).
pub fn downloadable(status: &str, expired: bool) -> Result<()> {
    if expired {
        return Err(Error::Gone(
            "this export has expired and its content was deleted",
        ));
    }
    match status {
        "done" => Ok(()),
        "failed" => Err(Error::conflict(
            "export_failed",
            "this export failed; ask for a new one",
        )),
        _ => Err(Error::conflict(
            "export_not_ready",
            "this export is still being written; see its progress",
        )),
    }
}

pub async fn download(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Response> {
    let mut tx = ctx.begin(&db).await?;
    let export = fetch(&mut tx, id).await?;
    downloadable(
        &export.status,
        export.purged_at.is_some() || export.expires_at <= OffsetDateTime::now_utc(),
    )?;
    let chunks = sqlx::query_scalar!(
        "SELECT data FROM audit_export_chunk
         WHERE export_id = $1 AND tenant_id = current_tenant_id() ORDER BY ordinal",
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("audit.export_downloaded", "audit_export", id)
            .after(json!({ "format": export.format, "rows": export.rows_done })),
    )
    .await?;
    tx.commit().await?;

    let format = Format::parse(&export.format).unwrap_or(Format::Json);
    let body: Vec<u8> = chunks.concat();
    let disposition = format!(
        "attachment; filename=\"audit-export-{id}.{}\"",
        format.as_str()
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(anyhow::Error::from)?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The [`JOB`]: writes one export, batch by batch. Each batch is one transaction that appends a
/// chunk and moves the progress forward, so a retried job resumes after the last written event.
pub async fn run_job(db: &Db, tenant_id: Uuid, payload: &Value, last_attempt: bool) -> Written {
    let Some(export_id) = payload
        .get("export_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Written::Invalid("the job names no export".into());
    };
    match write(db, tenant_id, export_id).await {
        Ok(()) => Written::Done,
        Err(e) => {
            let error = format!("{e:#}");
            if last_attempt {
                if let Err(e) = fail(db, tenant_id, export_id, &error).await {
                    tracing::warn!(error = %e, "could not mark the export failed");
                }
            }
            Written::Retry(error)
        }
    }
}

async fn fail(db: &Db, tenant_id: Uuid, id: Uuid, error: &str) -> sqlx::Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    sqlx::query!(
        "UPDATE audit_export SET status = 'failed', error = $2, finished_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id() AND status IN ('queued', 'running')",
        id,
        error
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, export_id = %id))]
async fn write(db: &Db, tenant_id: Uuid, id: Uuid) -> anyhow::Result<()> {
    loop {
        let mut tx = db.tenant_tx(tenant_id).await?;
        let Some(export) = sqlx::query!(
            r#"SELECT format, filters, status, through_seq, last_seq, rows_done, rows_total,
                      (SELECT count(*) FROM audit_export_chunk c WHERE c.export_id = e.id) AS "chunks!"
               FROM audit_export e WHERE id = $1 AND tenant_id = $2 FOR UPDATE"#,
            id,
            tenant_id
        )
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(());
        };
        if !matches!(export.status.as_str(), "queued" | "running") {
            return Ok(());
        }
        let format = Format::parse(&export.format)
            .ok_or_else(|| anyhow::anyhow!("unknown format {}", export.format))?;
        let filter: Filter = serde_json::from_value(export.filters)?;
        if export.rows_total.is_none() {
            let total = count(&mut tx, tenant_id, &filter, export.through_seq).await?;
            sqlx::query!(
                "UPDATE audit_export SET status = 'running', rows_total = $2 WHERE id = $1",
                id,
                total
            )
            .execute(&mut *tx)
            .await?;
        }
        let after = export.last_seq.unwrap_or(0);
        let events = batch(&mut tx, tenant_id, &filter, after, export.through_seq).await?;
        let first = export.chunks == 0;
        let last = (events.len() as i64) < BATCH;
        let mut data = Vec::new();
        match format {
            Format::Csv => {
                if first {
                    data.extend_from_slice(csv_header().as_bytes());
                }
                for event in &events {
                    data.extend_from_slice(csv_row(event).as_bytes());
                }
            }
            Format::Json => {
                if first {
                    data.push(b'[');
                }
                for (i, event) in events.iter().enumerate() {
                    if export.rows_done > 0 || i > 0 {
                        data.push(b',');
                    }
                    data.push(b'\n');
                    serde_json::to_writer(&mut data, event)?;
                }
                if last {
                    data.extend_from_slice(b"\n]\n");
                }
            }
        }
        sqlx::query!(
            "INSERT INTO audit_export_chunk (tenant_id, export_id, ordinal, data) VALUES ($1, $2, $3, $4)",
            tenant_id,
            id,
            export.chunks as i32,
            data
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE audit_export
             SET rows_done = rows_done + $2, last_seq = coalesce($3, last_seq), bytes = bytes + $4,
                 status = CASE WHEN $5 THEN 'done' ELSE 'running' END,
                 finished_at = CASE WHEN $5 THEN now() END
             WHERE id = $1",
            id,
            events.len() as i64,
            events.last().map(|e| e.seq),
            data.len() as i64,
            last
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if last {
            return Ok(());
        }
    }
}

/// How many exports are past their time: asked for before `cutoff` (the tenant's period as it
/// stands now, which may have been shortened since), or past their own expiry.
pub async fn count_expired(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cutoff: OffsetDateTime,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_export
           WHERE tenant_id = $1 AND purged_at IS NULL AND (created_at < $2 OR expires_at <= now())"#,
        tenant_id,
        cutoff
    )
    .fetch_one(conn)
    .await
}

/// Expires up to `limit` exports past their time (see [`count_expired`]) and returns how many.
/// The record stays (who exported what, when) so a late download answers 410; the content goes.
/// Retention runs it, on its purge's transaction.
pub async fn expire(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cutoff: OffsetDateTime,
    limit: i64,
) -> sqlx::Result<u64> {
    let ids = sqlx::query_scalar!(
        "UPDATE audit_export SET purged_at = now(), status = 'expired'
         WHERE id IN (SELECT id FROM audit_export
                      WHERE tenant_id = $1 AND purged_at IS NULL
                        AND (created_at < $2 OR expires_at <= now())
                      LIMIT $3)
         RETURNING id",
        tenant_id,
        cutoff,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM audit_export_chunk WHERE tenant_id = $1 AND export_id = ANY($2)",
        tenant_id,
        &ids
    )
    .execute(&mut *conn)
    .await?;
    Ok(ids.len() as u64)
}

/// Expires the exports whose written part copies one of the audit rows `seqs` (a data
/// subject's erasure is about to erase their payloads) and returns how many. An export holds a
/// copy of a row when its filter matches the row and it has written past the row's number; one
/// still short of it reads the row after the erasure, already without its values, and one whose
/// filter leaves the rows out (an auditor's export of `ticket.*`) keeps its file. The record
/// stays, its content goes, as when retention expires it; a download answers 410.
pub async fn expire_holding(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    seqs: &[i64],
) -> anyhow::Result<u64> {
    let Some(first) = seqs.iter().min() else {
        return Ok(0);
    };
    let written = sqlx::query!(
        r#"SELECT id, filters, last_seq AS "last_seq!" FROM audit_export
           WHERE tenant_id = $1 AND purged_at IS NULL AND last_seq >= $2"#,
        tenant_id,
        first
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut holding = Vec::new();
    for export in written {
        let f: Filter = serde_json::from_value(export.filters)?;
        let holds = sqlx::query_scalar!(
            r#"SELECT EXISTS (
                   SELECT 1 FROM audit_search($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                   WHERE seq = ANY ($11) AND seq <= $12) AS "holds!""#,
            tenant_id,
            f.actor_type,
            f.actor_id,
            f.entity_type,
            f.entity_id,
            f.action,
            f.action_prefix,
            f.execution_id,
            f.from,
            f.to,
            seqs,
            export.last_seq
        )
        .fetch_one(&mut *conn)
        .await?;
        if holds {
            holding.push(export.id);
        }
    }
    sqlx::query!(
        "UPDATE audit_export
         SET purged_at = now(), status = 'expired',
             error = 'its content held values of a data subject who was erased since'
         WHERE tenant_id = $1 AND id = ANY ($2)",
        tenant_id,
        &holding
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM audit_export_chunk WHERE tenant_id = $1 AND export_id = ANY($2)",
        tenant_id,
        &holding
    )
    .execute(&mut *conn)
    .await?;
    Ok(holding.len() as u64)
}

// The WHERE clauses below are the listing's (routes.rs), bounded by the export's snapshot.

async fn count(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    f: &Filter,
    through_seq: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_search($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         WHERE seq <= $11"#,
        tenant_id,
        f.actor_type,
        f.actor_id,
        f.entity_type,
        f.entity_id,
        f.action,
        f.action_prefix,
        f.execution_id,
        f.from,
        f.to,
        through_seq
    )
    .fetch_one(conn)
    .await
}

async fn batch(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    f: &Filter,
    after_seq: i64,
    through_seq: i64,
) -> sqlx::Result<Vec<EventView>> {
    sqlx::query_as!(
        EventView,
        r#"SELECT seq AS "seq!", id AS "id!", occurred_at AS "occurred_at!", actor_type AS "actor_type!",
                actor_id, action AS "action!", entity_type AS "entity_type!", entity_id,
                before, after, ip, user_agent, request_id, execution_id
         FROM audit_search($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         WHERE seq > $11 AND seq <= $12
         ORDER BY seq
         LIMIT $13"#,
        tenant_id,
        f.actor_type,
        f.actor_id,
        f.entity_type,
        f.entity_id,
        f.action,
        f.action_prefix,
        f.execution_id,
        f.from,
        f.to,
        after_seq,
        through_seq,
        BATCH
    )
    .fetch_all(conn)
    .await
}

const COLUMNS: [&str; 14] = [
    "seq",
    "id",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "entity_type",
    "entity_id",
    "before",
    "after",
    "ip",
    "user_agent",
    "request_id",
    "execution_id",
];

fn csv_header() -> String {
    csv_line(COLUMNS.iter().map(|c| c.to_string()))
}

fn csv_row(e: &EventView) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
    let occurred_at = e
        .occurred_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    csv_line([
        e.seq.to_string(),
        e.id.to_string(),
        occurred_at,
        e.actor_type.clone(),
        text(&e.actor_id),
        e.action.clone(),
        e.entity_type.clone(),
        text(&e.entity_id),
        json(&e.before),
        json(&e.after),
        text(&e.ip),
        text(&e.user_agent),
        text(&e.request_id),
        e.execution_id.map(|id| id.to_string()).unwrap_or_default(),
    ])
}

/// One RFC 4180 record: every field quoted (inner quotes doubled), formulas neutralised,
/// CRLF-terminated; a contact's export (privacy) writes its CSV files with it too. Written by
/// hand rather than with a CSV crate because quoting everything leaves nothing to decide.
pub fn csv_line(fields: impl IntoIterator<Item = String>) -> String {
    let mut line = String::new();
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push('"');
        line.push_str(&neutralise_formula(&field).replace('"', "\"\""));
        line.push('"');
    }
    line.push_str("\r\n");
    line
}

/// A spreadsheet would run a cell that starts with `=`, `+`, `-` or `@` (or a tab or carriage
/// return in front of one) as a formula; a leading apostrophe makes it text (OWASP CSV
/// injection). Audit rows carry attacker-chosen text (user agents, names), so every cell gets it.
fn neutralise_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_quotes_are_doubled() {
        let line = csv_line([
            "=HYPERLINK(\"http://evil\")".to_string(),
            "+1".into(),
            "-2".into(),
            "@SUM(A1)".into(),
            "\t=1".into(),
            "plain, with comma".into(),
            String::new(),
        ]);
        assert_eq!(
            line,
            "\"'=HYPERLINK(\"\"http://evil\"\")\",\"'+1\",\"'-2\",\"'@SUM(A1)\",\"'\t=1\",\"plain, with comma\",\"\"\r\n"
        );
    }

    #[test]
    fn newlines_stay_inside_their_quoted_cell() {
        assert_eq!(
            csv_line(["a\nb".to_string()]),
            "\"a\nb\"\r\n",
            "a newline inside quotes is part of the cell"
        );
    }
}
