//! Access and portability (DSR-1): one export of everything held about a contact: profile,
//! account, conversations and messages, notes, attachments' metadata, consents, data-subject
//! requests, tickets, the agent's executions about them (what was sent to which provider and
//! model, and the decision), review items, and the sharing list (the providers, models and
//! action endpoints that received their data). One `export.json` and one CSV file per data
//! class, in one zip.
//!
//! A job writes it, as the audit log's export does: asking for it queues the job in the same
//! transaction, the job reads every class in one transaction and moves the progress on after
//! each (in transactions of their own, so the progress is seen while it runs), and the zip is
//! kept in Postgres in chunks. The agent masks a person's values before the model sees them,
//! so what the execution records and review items hold is restored from each conversation's
//! PII vault: the person gets their values back, and beside them what the provider was sent.
//!
//! An export is kept for the tenant's export period (seven days at most, DSR-7); retention's
//! purge then deletes it, row and file ([`RETENTION`]). Asking for and downloading one are
//! audit events on the contact.

use std::collections::HashMap;
use std::io::Write;

use axum::extract::{FromRef, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::requests::{self, Kind};
use crate::agent::AgentState;
use crate::audit::export::csv_line;
use crate::audit::AuditEvent;
use crate::crm::{accounts, contacts};
use crate::crypto::Sealer;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::guardrails::{unmask_value, Vault};
use crate::http::{Access, Api, Contract, Ctx, Json, Path};
use crate::queue::{Job, NewJob, Outcome};
use crate::rbac::Permission;

/// The job kind that writes a contact's export.
pub const JOB: &str = "privacy.contact_export";

/// The data classes, in the order the job gathers them and the zip holds them; one CSV each.
const CLASSES: [&str; 14] = [
    "profile",
    "account",
    "conversations",
    "messages",
    "notes",
    "attachments",
    "consents",
    "requests",
    "tickets",
    "tasks",
    "deals",
    "agent_executions",
    "review_items",
    "sharing",
];
/// One step per class, and one for writing the zip.
const STEPS: i32 = CLASSES.len() as i32 + 1;
/// The zip is stored in chunks of this size.
const CHUNK: usize = 1 << 20;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::DataSubjectRights;
    api.endpoint(
        Method::POST,
        "/api/v1/contacts/{contact_id}/exports",
        Requires(DataSubjectRights),
        (
            "privacy",
            "Export everything held about a contact as JSON and CSV in a zip (DSR-1), written by a job",
        ),
        Contract::new()
            .body::<NewExport>()
            .returns::<ExportView>(StatusCode::ACCEPTED)
            .error(StatusCode::BAD_REQUEST, "invalid_request"),
        create,
    )
    .endpoint(
        Method::GET,
        "/api/v1/contact-exports/{export_id}",
        Requires(DataSubjectRights),
        (
            "privacy",
            "A contact's export: its progress, and until when it can be downloaded (DSR-7)",
        ),
        Contract::new().ok::<ExportView>(),
        show,
    )
    .endpoint(
        Method::GET,
        "/api/v1/contact-exports/{export_id}/download",
        Requires(DataSubjectRights),
        ("privacy", "Download a contact's finished export (a zip)"),
        Contract::new()
            .returns_media(
                StatusCode::OK,
                "application/zip",
                "export.json and one CSV file per data class",
            )
            .error(StatusCode::GONE, "gone")
            .error(StatusCode::CONFLICT, "export_failed")
            .error(StatusCode::CONFLICT, "export_not_ready"),
        download,
    )
}

/// What to export beside the contact.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewContactExport)]
pub struct NewExport {
    /// The access or portability request (DSR-6) about this contact that the export answers.
    #[serde(default)]
    pub request_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ContactExport)]
pub struct ExportView {
    pub id: Uuid,
    pub contact_id: Uuid,
    #[schema(required = true)]
    pub request_id: Option<Uuid>,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// Data classes gathered, and the zip written, out of `steps_total`.
    pub steps_done: i32,
    pub steps_total: i32,
    /// Percent done.
    pub progress: i32,
    /// Rows per data class, once done.
    #[schema(value_type = Object)]
    pub counts: Value,
    /// The zip's size.
    pub bytes: i64,
    #[schema(required = true)]
    pub error: Option<String>,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub finished_at: Option<OffsetDateTime>,
    /// After this the download answers 410, and retention deletes the export (DSR-7).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<ExportView> {
    sqlx::query_as!(
        ExportView,
        r#"SELECT id, contact_id, request_id, status, steps_done, steps_total,
                  (steps_done * 100 / steps_total) AS "progress!", counts, bytes, error,
                  requested_by, created_at, finished_at, expires_at
           FROM contact_export WHERE id = $1 AND tenant_id = current_tenant_id()"#,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

/// A contact's exports, newest first (the web app's contact panel lists them).
pub async fn for_contact(conn: &mut PgConnection, contact_id: Uuid) -> Result<Vec<ExportView>> {
    Ok(sqlx::query_as!(
        ExportView,
        r#"SELECT id, contact_id, request_id, status, steps_done, steps_total,
                  (steps_done * 100 / steps_total) AS "progress!", counts, bytes, error,
                  requested_by, created_at, finished_at, expires_at
           FROM contact_export
           WHERE contact_id = $1 AND tenant_id = current_tenant_id() AND expires_at > now()
           ORDER BY created_at DESC"#,
        contact_id
    )
    .fetch_all(conn)
    .await?)
}

/// The exports made for request `request_id`, newest first, expired ones included (the request
/// shows that its answer was made and when it stopped being downloadable).
pub async fn for_request(conn: &mut PgConnection, request_id: Uuid) -> Result<Vec<ExportView>> {
    Ok(sqlx::query_as!(
        ExportView,
        r#"SELECT id, contact_id, request_id, status, steps_done, steps_total,
                  (steps_done * 100 / steps_total) AS "progress!", counts, bytes, error,
                  requested_by, created_at, finished_at, expires_at
           FROM contact_export
           WHERE request_id = $1 AND tenant_id = current_tenant_id()
           ORDER BY created_at DESC"#,
        request_id
    )
    .fetch_all(conn)
    .await?)
}

async fn create(
    State(db): State<Db>,
    ctx: Ctx,
    Path(contact_id): Path<Uuid>,
    Json(body): Json<NewExport>,
) -> Result<(StatusCode, Json<ExportView>)> {
    let view = request(&db, &ctx, contact_id, body).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Asks for a contact's export: the record, its job and the audit event commit together. The
/// API and the web app both ask through here.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, contact_id = %contact_id))]
pub async fn request(db: &Db, ctx: &Ctx, contact_id: Uuid, body: NewExport) -> Result<ExportView> {
    let mut tx = ctx.begin(db).await?;
    contacts::fetch(&mut tx, contact_id).await?;
    if let Some(request_id) = body.request_id {
        // Another tenant's request answers 404, as everywhere.
        let asked = requests::fetch(&mut tx, request_id, false).await?;
        if !matches!(asked.kind, Kind::Access | Kind::Portability) {
            return Err(Error::bad_request(
                "invalid_request",
                format!(
                    "request {request_id} is a {} request; an export answers access or portability",
                    asked.kind.as_str()
                ),
            ));
        }
        if asked.contact_id != Some(contact_id) {
            return Err(Error::bad_request(
                "invalid_request",
                format!("request {request_id} is about another person"),
            ));
        }
        // Making its answer is work on the request; a closed one stays closed (its export is
        // then a copy made afterwards, still tied to it).
        if matches!(
            asked.status,
            requests::Status::Received | requests::Status::WaitingOnSubject
        ) {
            requests::set_status(&mut tx, ctx, request_id, requests::Status::InProgress, None)
                .await?;
        }
    }
    let days = crate::retention::policy(&mut tx, ctx.tenant_id)
        .await?
        .exports_days;
    let id = Uuid::now_v7();
    let source = ctx.audit_source();
    let requested_by = format!(
        "{}:{}",
        source.actor_type,
        source.actor_id.as_deref().unwrap_or_default()
    );
    sqlx::query!(
        "INSERT INTO contact_export (id, tenant_id, contact_id, request_id, requested_by, steps_total, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(days => $7))",
        id,
        ctx.tenant_id,
        contact_id,
        body.request_id,
        requested_by,
        STEPS,
        days
    )
    .execute(&mut *tx)
    .await?;
    crate::queue::enqueue(
        &mut tx,
        ctx.tenant_id,
        NewJob::new(
            JOB,
            format!("contact-export:{id}"),
            json!({ "export_id": id }),
        ),
    )
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("contact.export_requested", "contact", contact_id)
            .after(json!({ "export_id": id, "request_id": body.request_id })),
    )
    .await?;
    let view = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(view)
}

async fn show(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Json<ExportView>> {
    let mut tx = ctx.begin(&db).await?;
    let view = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(view))
}

async fn download(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Response> {
    let (export, zip) = file(&db, &ctx, id).await?;
    let disposition = format!("attachment; filename=\"contact-export-{}.zip\"", export.id);
    let mut response = zip.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(anyhow::Error::from)?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A finished export's zip, the download recorded in the audit log on the same transaction.
/// Past its expiry it answers 410 until retention deletes it, then 404.
pub async fn file(db: &Db, ctx: &Ctx, id: Uuid) -> Result<(ExportView, Vec<u8>)> {
    let mut tx = ctx.begin(db).await?;
    let export = fetch(&mut tx, id).await?;
    crate::audit::export::downloadable(
        &export.status,
        export.expires_at <= OffsetDateTime::now_utc(),
    )?;
    let chunks = sqlx::query_scalar!(
        "SELECT data FROM contact_export_chunk
         WHERE export_id = $1 AND tenant_id = current_tenant_id() ORDER BY ordinal",
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("contact.export_downloaded", "contact", export.contact_id)
            .after(json!({ "export_id": id, "bytes": export.bytes })),
    )
    .await?;
    tx.commit().await?;
    Ok((export, chunks.concat()))
}

/// Deletes a contact's exports and their files on the caller's transaction, and says how many
/// there were: erasure (DSR-3) leaves no copy of the person behind.
pub(crate) async fn forget_for_contact(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
) -> Result<u64> {
    sqlx::query!(
        "DELETE FROM contact_export_chunk c USING contact_export e
         WHERE c.export_id = e.id AND c.tenant_id = $1 AND e.tenant_id = $1 AND e.contact_id = $2",
        tenant_id,
        contact_id
    )
    .execute(&mut *tx)
    .await?;
    let deleted = sqlx::query!(
        "DELETE FROM contact_export WHERE tenant_id = $1 AND contact_id = $2",
        tenant_id,
        contact_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// How retention's purge reaches contact exports: retention sits below privacy and cannot name
/// it, so the application hands it this (DSR-7).
pub const RETENTION: crate::retention::OtherExports = crate::retention::OtherExports {
    count: count_expired_boxed,
    expire: expire_boxed,
};

fn count_expired_boxed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cutoff: OffsetDateTime,
) -> BoxFuture<'_, sqlx::Result<i64>> {
    Box::pin(count_expired(conn, tenant_id, cutoff))
}

fn expire_boxed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cutoff: OffsetDateTime,
    limit: i64,
) -> BoxFuture<'_, sqlx::Result<u64>> {
    Box::pin(expire(conn, tenant_id, cutoff, limit))
}

/// Exports past their time: asked for before `cutoff` (the tenant's period as it stands now,
/// which may have been shortened since), or past their own expiry.
pub async fn count_expired(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cutoff: OffsetDateTime,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM contact_export
           WHERE tenant_id = $1 AND (created_at < $2 OR expires_at <= now())"#,
        tenant_id,
        cutoff
    )
    .fetch_one(conn)
    .await
}

/// Deletes up to `limit` exports past their time (see [`count_expired`]), row and file, and
/// returns how many. Retention runs it on its purge's transaction, which records the purge.
pub async fn expire(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cutoff: OffsetDateTime,
    limit: i64,
) -> sqlx::Result<u64> {
    let ids = sqlx::query_scalar!(
        "SELECT id FROM contact_export
         WHERE tenant_id = $1 AND (created_at < $2 OR expires_at <= now())
         ORDER BY created_at LIMIT $3",
        tenant_id,
        cutoff,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM contact_export_chunk WHERE tenant_id = $1 AND export_id = ANY($2)",
        tenant_id,
        &ids
    )
    .execute(&mut *conn)
    .await?;
    let deleted = sqlx::query!(
        "DELETE FROM contact_export WHERE tenant_id = $1 AND id = ANY($2)",
        tenant_id,
        &ids
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// The job kinds privacy runs.
pub fn register<S>(jobs: &mut crate::queue::Handlers<S>)
where
    S: Send + Sync + 'static,
    AgentState: FromRef<S>,
{
    jobs.register(JOB, |state, job| {
        let state = AgentState::from_ref(state);
        Box::pin(async move { run_job(&state.db, &state.sealer, job).await })
    });
}

async fn run_job(db: &Db, sealer: &Sealer, job: &Job) -> Outcome {
    let Some(export_id) = job
        .payload
        .get("export_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Outcome::Fail {
            error: "the job names no export".into(),
        };
    };
    match write(db, sealer, job.tenant_id, export_id).await {
        Ok(()) => Outcome::Done,
        Err(e) => {
            let error = format!("{e:#}");
            if job.attempts >= job.max_attempts {
                if let Err(e) = fail(db, job.tenant_id, export_id, &error).await {
                    tracing::warn!(error = %e, "could not mark the contact export failed");
                }
            }
            Outcome::Retry { error, after: None }
        }
    }
}

async fn fail(db: &Db, tenant_id: Uuid, id: Uuid, error: &str) -> sqlx::Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    sqlx::query!(
        "UPDATE contact_export SET status = 'failed', error = $2, finished_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id() AND status IN ('queued', 'running')",
        id,
        error
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

async fn progress(db: &Db, tenant_id: Uuid, id: Uuid, steps_done: i32) -> sqlx::Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    sqlx::query!(
        "UPDATE contact_export SET steps_done = $2 WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        steps_done
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Gathers every class in one transaction (one consistent picture of the person), moving the
/// progress on after each, then writes the zip. A retried job starts over: the file of a try
/// that died half-way is deleted first.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, export_id = %id))]
async fn write(db: &Db, sealer: &Sealer, tenant_id: Uuid, id: Uuid) -> anyhow::Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    let Some(export) = sqlx::query!(
        "SELECT contact_id, status FROM contact_export
         WHERE id = $1 AND tenant_id = current_tenant_id() FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        // Expired or erased meanwhile: nothing to write.
        return Ok(());
    };
    if !matches!(export.status.as_str(), "queued" | "running") {
        return Ok(());
    }
    sqlx::query!(
        "DELETE FROM contact_export_chunk WHERE export_id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE contact_export SET status = 'running', steps_done = 0 WHERE id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut read = db.tenant_tx(tenant_id).await?;
    let mut step = 0;
    let mut next = |_: &str| {
        step += 1;
        progress(db, tenant_id, id, step)
    };
    let Some(data) = gather(&mut read, sealer, export.contact_id, &mut next).await? else {
        return Ok(());
    };
    read.commit().await?;

    let zip = zip(&data, &CLASSES)?;
    let counts: Map<String, Value> = CLASSES
        .iter()
        .map(|class| (class.to_string(), json!(rows(&data, class).len())))
        .collect();
    let mut tx = db.tenant_tx(tenant_id).await?;
    for (ordinal, chunk) in zip.chunks(CHUNK).enumerate() {
        sqlx::query!(
            "INSERT INTO contact_export_chunk (tenant_id, export_id, ordinal, data) VALUES ($1, $2, $3, $4)",
            tenant_id,
            id,
            ordinal as i32,
            chunk
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!(
        "UPDATE contact_export SET status = 'done', steps_done = steps_total, counts = $2,
                bytes = $3, finished_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        Value::Object(counts),
        zip.len() as i64
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Everything held about the contact, by class (see [`CLASSES`]); `None` when the contact is
/// gone. `next` is called after each class.
async fn gather<F, Fut>(
    tx: &mut PgConnection,
    sealer: &Sealer,
    contact_id: Uuid,
    next: &mut F,
) -> anyhow::Result<Option<Map<String, Value>>>
where
    F: FnMut(&str) -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<()>>,
{
    let mut data = Map::new();
    let Some(profile) = contacts::export_row(tx, contact_id).await? else {
        return Ok(None);
    };
    let account_id = profile["account_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok());
    data.insert("profile".into(), profile);
    next("profile").await?;

    let account = match account_id {
        Some(account_id) => accounts::export_row(tx, account_id).await?,
        None => None,
    };
    data.insert("account".into(), account.unwrap_or(Value::Null));
    next("account").await?;

    let conversations = crate::conversations::export_conversations(tx, contact_id).await?;
    let conversation_ids: Vec<Uuid> = conversations.iter().filter_map(uuid_of).collect();
    data.insert("conversations".into(), Value::Array(conversations));
    next("conversations").await?;

    let mut messages = Vec::new();
    let mut notes = Vec::new();
    let mut attachments = Vec::new();
    for message in crate::conversations::export_messages(tx, &conversation_ids).await? {
        for attachment in message["attachments"].as_array().into_iter().flatten() {
            attachments.push(json!({
                "message_id": message["id"],
                "conversation_id": message["conversation_id"],
                "created_at": message["created_at"],
                "attachment": attachment,
            }));
        }
        if message["private"] == Value::Bool(true) {
            notes.push(message);
        } else {
            messages.push(message);
        }
    }
    data.insert("messages".into(), Value::Array(messages));
    next("messages").await?;
    data.insert("notes".into(), Value::Array(notes));
    next("notes").await?;
    data.insert("attachments".into(), Value::Array(attachments));
    next("attachments").await?;

    let consents = sqlx::query_scalar!(
        r#"SELECT to_jsonb(c) AS "row!" FROM consent c
           WHERE contact_id = $1 AND tenant_id = current_tenant_id() ORDER BY granted_at, id"#,
        contact_id
    )
    .fetch_all(&mut *tx)
    .await?;
    data.insert("consents".into(), Value::Array(consents));
    next("consents").await?;

    let requests = sqlx::query_scalar!(
        r#"SELECT to_jsonb(r) || jsonb_build_object('notes',
                      (SELECT coalesce(jsonb_agg(jsonb_build_object('body', n.body, 'created_at', n.created_at)
                                                 ORDER BY n.id), '[]'::jsonb)
                       FROM privacy_request_note n WHERE n.request_id = r.id)) AS "row!"
           FROM privacy_request r
           WHERE contact_id = $1 AND tenant_id = current_tenant_id() ORDER BY created_at, id"#,
        contact_id
    )
    .fetch_all(&mut *tx)
    .await?;
    data.insert("requests".into(), Value::Array(requests));
    next("requests").await?;

    let tickets = crate::cs::tickets::export_rows(tx, contact_id, &conversation_ids).await?;
    let ticket_ids: Vec<Uuid> = tickets.iter().filter_map(uuid_of).collect();
    data.insert("tickets".into(), Value::Array(tickets));
    next("tickets").await?;
    let tasks = crate::cs::tasks::export_rows(tx, contact_id, &ticket_ids).await?;
    data.insert("tasks".into(), Value::Array(tasks));
    next("tasks").await?;
    let deals = crate::cs::deals::export_rows(tx, contact_id).await?;
    data.insert("deals".into(), Value::Array(deals));
    next("deals").await?;

    // The values behind the placeholders the agent gave the model, per conversation.
    let mut vaults: HashMap<Uuid, Vault> = HashMap::new();
    for (conversation_id, sealed) in
        crate::conversations::sealed_vaults(tx, &conversation_ids).await?
    {
        let vault =
            crate::agent::runtime::open_sealed_vault(sealer, Some(&sealed), conversation_id)?;
        vaults.insert(conversation_id, vault);
    }
    let restore_in = |conversation: Option<Uuid>, value: &Value| -> Value {
        match conversation.and_then(|c| vaults.get(&c)) {
            Some(vault) => unmask_value(value, vault),
            None => value.clone(),
        }
    };

    let actions = crate::reviews::tenant_actions(tx).await?;
    let mut endpoints: Vec<Value> = Vec::new();
    let mut reached = |action: Option<&crate::reviews::TenantAction>, how: &str, at: &Value| {
        if let Some(action) = action {
            endpoints.push(json!({
                "kind": "action_endpoint",
                "name": action.name,
                "target_url": action.target_url,
                "how": how,
                "at": at,
            }));
        }
    };

    let mut executions = Vec::new();
    for row in crate::agent::export_executions(tx, contact_id).await? {
        let conversation = row["conversation_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok());
        let record = &row["record"];
        for call in record["tool_calls"].as_array().into_iter().flatten() {
            if call["effect"] == "executed" {
                let name = call["name"].as_str().unwrap_or_default();
                reached(
                    actions.iter().find(|a| a.name == name),
                    "called by the agent",
                    &row["started_at"],
                );
            }
        }
        executions.push(json!({
            "id": row["id"],
            "conversation_id": row["conversation_id"],
            "trigger_message_id": row["trigger_message_id"],
            "provider": row["provider"],
            "model": row["model"],
            "embedding_provider": row["embedding_provider"],
            "embedding_model": row["embedding_model"],
            "offline": row["offline"],
            "outcome": row["outcome"],
            "confidence": row["confidence"],
            "started_at": row["started_at"],
            "finished_at": row["finished_at"],
            "decision": restore_in(conversation, &record["decision"]),
            "reason": record["reason"],
            // What the provider received, as it received it: the person's values masked.
            "sent_to_provider": record["requests"],
            // The whole record, the person's values restored.
            "record": restore_in(conversation, record),
        }));
    }
    data.insert("agent_executions".into(), Value::Array(executions));
    next("agent_executions").await?;

    let mut items = Vec::new();
    for row in crate::reviews::export_items(tx, &conversation_ids).await? {
        let conversation = uuid_at(&row, "conversation_id");
        if row["kind"] == "action" && matches!(row["status"].as_str(), Some("executed" | "failed"))
        {
            let action_id = uuid_at(&row, "action_id");
            reached(
                actions.iter().find(|a| Some(a.id) == action_id),
                "approved by a reviewer",
                &row["executed_at"],
            );
        }
        items.push(restore_in(conversation, &row));
    }
    data.insert("review_items".into(), Value::Array(items));
    next("review_items").await?;

    let mut sharing: Vec<Value> = crate::agent::contact_processors(tx, contact_id)
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "kind": "ai_provider",
                "purpose": p.purpose,
                "provider": p.provider,
                "model": p.model,
                "offline": p.offline,
                "runs": p.runs,
                "first_at": rfc3339(p.first_at),
                "last_at": rfc3339(p.last_at),
            })
        })
        .collect();
    sharing.append(&mut endpoints);
    data.insert("sharing".into(), Value::Array(sharing));
    next("sharing").await?;
    Ok(Some(data))
}

fn uuid_of(row: &Value) -> Option<Uuid> {
    uuid_at(row, "id")
}

fn uuid_at(row: &Value, field: &str) -> Option<Uuid> {
    row[field].as_str().and_then(|s| Uuid::parse_str(s).ok())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A class's rows: the profile and the account are one row (or none).
fn rows<'a>(data: &'a Map<String, Value>, class: &str) -> Vec<&'a Map<String, Value>> {
    match data.get(class) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        Some(Value::Object(row)) => vec![row],
        _ => Vec::new(),
    }
}

/// One CSV file: the columns are `id` (when the rows have one) and then every field seen, in
/// the order first seen; nested values are written as JSON.
fn csv(rows: &[&Map<String, Value>]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    if rows.iter().any(|row| row.contains_key("id")) {
        columns.push("id");
    }
    for row in rows {
        for key in row.keys() {
            if !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    let mut out = csv_line(columns.iter().map(|c| c.to_string()));
    for row in rows {
        out.push_str(&csv_line(columns.iter().map(|c| match row.get(*c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        })));
    }
    out
}

/// The zip of an export: `export.json` with everything, and one CSV file per class (a tenant's
/// export writes its tables through here too).
pub(super) fn zip(data: &Map<String, Value>, classes: &[&str]) -> anyhow::Result<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("export.json", options)?;
    serde_json::to_writer_pretty(&mut zip, data)?;
    for class in classes {
        zip.start_file(format!("{class}.csv"), options)?;
        zip.write_all(csv(&rows(data, class)).as_bytes())?;
    }
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_are_the_id_then_every_field_of_every_row_and_formulas_are_neutralised() {
        let a = json!({ "id": "1", "body": "=1+1", "n": 2 });
        let b = json!({ "id": "2", "extra": { "x": null } });
        let rows = [a.as_object().unwrap(), b.as_object().unwrap()];
        assert_eq!(
            csv(&rows),
            "\"id\",\"body\",\"n\",\"extra\"\r\n\"1\",\"'=1+1\",\"2\",\"\"\r\n\"2\",\"\",\"\",\"{\"\"x\"\":null}\"\r\n"
        );
    }
}
