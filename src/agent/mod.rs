//! The agent runtime: AI agents answering end customers through any OpenAI-compatible model
//! (or the offline responder), always behind the guardrail pipeline, with every execution
//! recorded and material decisions held for a reviewer.

pub mod decision;
pub mod dry_run;
pub mod egress;
pub mod pipeline;
pub mod prompts;
pub mod provider;
pub mod runtime;
pub mod settings;
pub mod tools;

use axum::extract::State;
use axum::http::Method;
use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Ctx;
use crate::error::{Error, Result};
use crate::http::Rfc3339;
use crate::http::{Access, Api, Json, Path};
use crate::rbac::Permission;

pub fn routes(api: Api) -> Api {
    use Access::*;
    use Permission::ExecutionsRead;
    let api = api
        .route(
            Method::GET,
            "/api/v1/conversations/{conversation_id}/executions",
            Requires(ExecutionsRead),
            ("agent", "Agent executions of a conversation"),
            by_conversation,
        )
        .route(
            Method::GET,
            "/api/v1/contacts/{contact_id}/executions",
            Requires(ExecutionsRead),
            ("agent", "Agent executions about a contact"),
            by_contact,
        )
        .route(
            Method::GET,
            "/api/v1/contacts/{contact_id}/processors",
            Requires(ExecutionsRead),
            (
                "agent",
                "Which providers and models processed a contact's data",
            ),
            processors,
        )
        .route(
            Method::GET,
            "/api/v1/executions/{execution_id}",
            Requires(ExecutionsRead),
            ("agent", "One execution's full record"),
            show,
        );
    dry_run::routes(tools::routes(settings::routes(api)))
}

#[derive(Debug, Serialize)]
struct ExecutionSummary {
    id: Uuid,
    conversation_id: Uuid,
    contact_id: Uuid,
    trigger_message_id: Option<Uuid>,
    provider: String,
    model: String,
    offline: bool,
    outcome: String,
    confidence: Option<f32>,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    finished_at: Option<OffsetDateTime>,
}

async fn by_conversation(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<ExecutionSummary>>> {
    let mut tx = ctx.begin(&state).await?;
    crate::conversations::fetch(&mut tx, id).await?;
    let rows = sqlx::query_as!(
        ExecutionSummary,
        "SELECT id, conversation_id, contact_id, trigger_message_id, provider, model, offline, outcome, confidence, started_at, finished_at
         FROM agent_execution WHERE conversation_id = $1 AND tenant_id = current_tenant_id() ORDER BY started_at DESC",
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

async fn by_contact(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<ExecutionSummary>>> {
    let mut tx = ctx.begin(&state).await?;
    crate::crm::contacts::fetch(&mut tx, id).await?;
    let rows = sqlx::query_as!(
        ExecutionSummary,
        "SELECT id, conversation_id, contact_id, trigger_message_id, provider, model, offline, outcome, confidence, started_at, finished_at
         FROM agent_execution WHERE contact_id = $1 AND tenant_id = current_tenant_id() ORDER BY started_at DESC",
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// AGT-10: the right to know with whom a person's data was shared.
async fn processors(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    let mut tx = ctx.begin(&state).await?;
    crate::crm::contacts::fetch(&mut tx, id).await?;
    let rows = sqlx::query!(
        r#"SELECT provider, model, offline, count(*) AS "runs!", min(started_at) AS "first!", max(started_at) AS "last!"
           FROM agent_execution WHERE contact_id = $1 AND tenant_id = current_tenant_id()
           GROUP BY provider, model, offline ORDER BY min(started_at)"#,
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({ "provider": r.provider, "model": r.model, "offline": r.offline, "runs": r.runs, "first_at": r.first.rfc3339(), "last_at": r.last.rfc3339() }))
        .collect();
    Ok(Json(json!({ "contact_id": id, "processors": items })))
}

async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    let mut tx = ctx.begin(&state).await?;
    let row = sqlx::query!(
        "SELECT id, conversation_id, contact_id, provider, model, offline, outcome, confidence, record, started_at, finished_at
         FROM agent_execution WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(Json(json!({
        "id": row.id, "conversation_id": row.conversation_id, "contact_id": row.contact_id,
        "provider": row.provider, "model": row.model, "offline": row.offline, "outcome": row.outcome,
        "confidence": row.confidence, "started_at": row.started_at.rfc3339(), "finished_at": row.finished_at.rfc3339(), "record": row.record,
    })))
}
