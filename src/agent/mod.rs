//! The agent runtime: AI agents answering end customers through any OpenAI-compatible model
//! (or the offline responder), always behind the guardrail pipeline, with every execution
//! recorded and material decisions held for a reviewer.

pub mod actions;
pub mod decision;
pub mod dry_run;
pub mod erasure;
pub mod execute;
pub mod pipeline;
pub mod prompts;
pub mod provider;
pub mod runtime;
pub mod settings;
pub mod tools;

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::Method;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::Ctx;
use crate::crypto::Sealer;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Json, Path};
use crate::rbac::Permission;
use utoipa::ToSchema;

/// Loads what the agent runtime would otherwise build at its first run (prompt templates, the
/// built-in tools), so a broken one stops start-up instead of failing a customer's run.
pub fn warm_up() {
    prompts::warm_up();
    tools::builtin_specs();
}

/// What the agent needs of the process: the database, the sealer of its secrets, the caches
/// that spare a run reloading what did not change, and its outbound HTTP.
#[derive(Clone)]
pub struct AgentState {
    pub db: Db,
    /// Seals the provider API key and action secrets at rest (SEC-10).
    pub sealer: Arc<Sealer>,
    /// Whether tenants' action endpoints and providers may sit on private addresses (tests,
    /// closed deployments); public addresses only otherwise.
    pub allow_private: bool,
    /// Compiled guardrail policies, per tenant and configuration version.
    pub policies: Arc<crate::guardrails::PolicyCache>,
    /// Provider clients, per tenant and configuration version: a run reuses the client's
    /// connections (and TLS sessions) instead of building a client each time.
    pub providers: Arc<settings::ProviderCache>,
    /// The agent's settings and tenant actions, per tenant and version: an agent turn reads
    /// their versions with its facts and loads them only after a change.
    pub settings: Arc<settings::SettingsCache>,
    pub actions: Arc<tools::ActionsCache>,
    /// Sends a run's notifications after its commit.
    pub notifier: Arc<crate::events::Notifier>,
    /// Outbound HTTP to tenants' action endpoints (public addresses only, see [`crate::http::egress`]).
    pub http: reqwest::Client,
}

impl AgentState {
    pub fn new(
        db: Db,
        sealer: Arc<Sealer>,
        allow_private: bool,
        notifier: Arc<crate::events::Notifier>,
    ) -> anyhow::Result<Self> {
        Ok(AgentState {
            db,
            sealer,
            allow_private,
            policies: Arc::new(crate::guardrails::PolicyCache::new()),
            providers: Arc::default(),
            settings: Arc::default(),
            actions: Arc::default(),
            notifier,
            http: crate::http::egress::client(allow_private)?,
        })
    }
}

impl AsRef<Db> for AgentState {
    fn as_ref(&self) -> &Db {
        &self.db
    }
}

/// The job kinds the agent runs.
pub fn register<S>(jobs: &mut crate::queue::Handlers<S>)
where
    S: Send + Sync + 'static,
    AgentState: FromRef<S>,
{
    jobs.register(crate::conversations::AGENT_RUN, |state, job| {
        let state = AgentState::from_ref(state);
        Box::pin(async move { runtime::run_job(&state, job).await })
    });
    jobs.register(crate::reviews::EXECUTE_JOB, |state, job| {
        let state = AgentState::from_ref(state);
        Box::pin(async move { execute::run_approved_job(&state, job).await })
    });
}

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AgentState: FromRef<S>,
{
    use Access::*;
    // The router is built once at start-up (and by every test app): the templates load here.
    warm_up();
    use Permission::ExecutionsRead;
    let api = api
        .endpoint(
            Method::GET,
            "/api/v1/conversations/{conversation_id}/executions",
            Requires(ExecutionsRead),
            ("agent", "Agent executions of a conversation, newest first"),
            Contract::new().ok_list::<ExecutionSummary>(),
            by_conversation,
        )
        .endpoint(
            Method::GET,
            "/api/v1/contacts/{contact_id}/executions",
            Requires(ExecutionsRead),
            ("agent", "Agent executions about a contact, newest first"),
            Contract::new().ok_list::<ExecutionSummary>(),
            by_contact,
        )
        .endpoint(
            Method::GET,
            "/api/v1/contacts/{contact_id}/processors",
            Requires(ExecutionsRead),
            (
                "agent",
                "Which providers and models processed a contact's data",
            ),
            Contract::new().ok::<Processors>(),
            processors,
        )
        .endpoint(
            Method::GET,
            "/api/v1/executions/{execution_id}",
            Requires(ExecutionsRead),
            ("agent", "One execution's full record"),
            Contract::new().ok::<ExecutionView>(),
            show,
        );
    dry_run::routes(actions::routes(settings::routes(api)))
}

/// One run of the agent on a conversation (AGT-8), in brief.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionSummary {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub contact_id: Uuid,
    /// The customer's message the run answered.
    #[schema(required = true)]
    pub trigger_message_id: Option<Uuid>,
    /// The chat model's provider (`offline`: the built-in responder).
    pub provider: String,
    pub model: String,
    pub offline: bool,
    pub outcome: runtime::RunOutcome,
    #[schema(required = true)]
    pub confidence: Option<f32>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// `null` while it runs.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub finished_at: Option<OffsetDateTime>,
}

/// Every provider and model that processed (masked) data of a contact's conversations (AGT-10).
#[derive(Serialize, ToSchema)]
#[schema(as = ContactProcessors)]
struct Processors {
    contact_id: Uuid,
    /// By first use.
    processors: Vec<Processor>,
}

/// A provider and model, what it was used for, how often and when.
#[derive(Serialize, ToSchema)]
#[schema(as = ContactProcessor)]
pub struct Processor {
    /// `chat` (the answer) or `embeddings` (knowledge retrieval).
    pub purpose: String,
    pub provider: String,
    pub model: String,
    /// The built-in offline responder: nothing left the platform.
    pub offline: bool,
    pub runs: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub first_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_at: OffsetDateTime,
}

/// An execution with its full record (AGT-8).
#[derive(Serialize, ToSchema)]
#[schema(as = Execution)]
pub struct ExecutionView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub contact_id: Uuid,
    pub provider: String,
    pub model: String,
    pub offline: bool,
    #[schema(value_type = runtime::RunOutcome)]
    pub outcome: String,
    /// The provider of the embeddings the run used; `null` for the built-in embedder.
    #[schema(required = true)]
    pub embedding_provider: Option<String>,
    #[schema(required = true)]
    pub embedding_model: Option<String>,
    #[schema(required = true)]
    pub confidence: Option<f32>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub finished_at: Option<OffsetDateTime>,
    /// The SHA-256 of the stored record, hex.
    pub record_sha256: String,
    /// Whether `record_sha256` is the digest in the run's `agent.executed` audit entry; `null`
    /// while the run has not finished, or for a run recorded before digests were.
    #[schema(required = true)]
    pub record_digest_ok: Option<bool>,
    /// Free-form: the run's audit record: the prompt as sent (masked), model and provider,
    /// sources, tool calls, response, confidence, guardrail verdicts, decision.
    #[schema(value_type = Object)]
    pub record: Value,
}

async fn by_conversation(
    State(state): State<AgentState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<ExecutionSummary>>> {
    let mut tx = ctx.begin(&state).await?;
    let rows = of_conversation(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// The agent's runs on a conversation, newest first; another tenant's conversation is not found.
pub async fn of_conversation(
    conn: &mut sqlx::PgConnection,
    conversation_id: Uuid,
) -> Result<Vec<ExecutionSummary>> {
    crate::conversations::fetch(&mut *conn, conversation_id).await?;
    Ok(sqlx::query_as!(
        ExecutionSummary,
        r#"SELECT id, conversation_id, contact_id, trigger_message_id, provider, model, offline, outcome AS "outcome: runtime::RunOutcome", confidence, started_at, finished_at
         FROM agent_execution WHERE conversation_id = $1 AND tenant_id = current_tenant_id() ORDER BY started_at DESC"#,
        conversation_id
    )
    .fetch_all(conn)
    .await?)
}

async fn by_contact(
    State(state): State<AgentState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<ExecutionSummary>>> {
    let mut tx = ctx.begin(&state).await?;
    crate::crm::contacts::fetch(&mut tx, id).await?;
    let rows = sqlx::query_as!(
        ExecutionSummary,
        r#"SELECT id, conversation_id, contact_id, trigger_message_id, provider, model, offline, outcome AS "outcome: runtime::RunOutcome", confidence, started_at, finished_at
         FROM agent_execution WHERE contact_id = $1 AND tenant_id = current_tenant_id() ORDER BY started_at DESC"#,
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// AGT-10: the right to know with whom a person's data was shared: every chat model and every
/// embeddings API that processed (masked) data of the contact's conversations, with the
/// purpose, how many runs and when.
async fn processors(
    State(state): State<AgentState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<Processors>> {
    let mut tx = ctx.begin(&state).await?;
    crate::crm::contacts::fetch(&mut tx, id).await?;
    let processors = contact_processors(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(Processors {
        contact_id: id,
        processors,
    }))
}

/// AGT-10, for one contact: every provider and model that processed their (masked) data, by
/// first use.
pub async fn contact_processors(
    conn: &mut sqlx::PgConnection,
    contact_id: Uuid,
) -> Result<Vec<Processor>> {
    let rows = sqlx::query!(
        r#"SELECT p.purpose AS "purpose!", p.provider AS "provider!", p.model AS "model!", x.offline,
                  count(*) AS "runs!", min(x.started_at) AS "first!", max(x.started_at) AS "last!"
           FROM agent_execution x
           CROSS JOIN LATERAL (VALUES ('chat', x.provider, x.model),
                                      ('embeddings', x.embedding_provider, x.embedding_model)) AS p (purpose, provider, model)
           WHERE x.contact_id = $1 AND x.tenant_id = current_tenant_id() AND p.provider IS NOT NULL
           GROUP BY p.purpose, p.provider, p.model, x.offline ORDER BY min(x.started_at), p.purpose"#,
        contact_id
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Processor {
            purpose: r.purpose,
            provider: r.provider,
            model: r.model,
            offline: r.offline,
            runs: r.runs,
            first_at: r.first,
            last_at: r.last,
        })
        .collect())
}

/// A knowledge passage a run retrieved, by its article, with its score.
pub struct RunSource {
    pub article_id: Uuid,
    pub title: String,
    pub score: f64,
}

/// The knowledge a run retrieved (best first), with the articles' titles as they are now; an
/// article deleted since is left out.
pub async fn run_sources(
    conn: &mut sqlx::PgConnection,
    execution_id: Uuid,
) -> Result<Vec<RunSource>> {
    let retrieval = sqlx::query_scalar!(
        r#"SELECT record -> 'retrieval' AS "retrieval" FROM agent_execution
           WHERE id = $1 AND tenant_id = current_tenant_id()"#,
        execution_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .flatten()
    .unwrap_or_default();
    let mut best: Vec<(Uuid, f64)> = Vec::new();
    for hit in retrieval.as_array().into_iter().flatten() {
        let (Some(article_id), Some(score)) = (
            hit["article_id"]
                .as_str()
                .and_then(|a| Uuid::parse_str(a).ok()),
            hit["score"].as_f64(),
        ) else {
            continue;
        };
        match best.iter_mut().find(|(a, _)| *a == article_id) {
            Some((_, s)) => *s = s.max(score),
            None => best.push((article_id, score)),
        }
    }
    best.sort_by(|a, b| b.1.total_cmp(&a.1));
    let ids: Vec<Uuid> = best.iter().map(|(a, _)| *a).collect();
    let titles = crate::knowledge::titles(conn, &ids).await?;
    Ok(best
        .into_iter()
        .filter_map(|(article_id, score)| {
            let title = titles.iter().find(|(id, _)| *id == article_id)?.1.clone();
            Some(RunSource {
                article_id,
                title,
                score,
            })
        })
        .collect())
}

/// One execution's record, and whether it is the record that was audited: `record_digest_ok`
/// compares the SHA-256 of the stored record with the digest in its `agent.executed` entry of
/// the hash-chained audit (AGT-8). `null`: the run has not finished, or has no entry (a run
/// recorded before digests were). Together with the chain's verification
/// (`GET /api/v1/audit/verify`), a changed record is detected.
async fn show(
    State(state): State<AgentState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ExecutionView>> {
    let mut tx = ctx.begin(&state).await?;
    let view = execution(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(view))
}

/// One execution with its record as stored (masked), and whether its digest is the audited one.
pub async fn execution(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<ExecutionView> {
    let row = sqlx::query!(
        r#"SELECT x.id, x.conversation_id, x.contact_id, x.provider, x.model, x.offline, x.outcome, x.confidence,
                  x.record, x.started_at, x.finished_at, x.embedding_provider, x.embedding_model,
                  encode(sha256(convert_to(x.record::text, 'UTF8')), 'hex') AS "digest!",
                  (SELECT a.after->>'record_sha256' FROM audit_event a
                   WHERE a.tenant_id = x.tenant_id AND a.entity_type = 'conversation'
                     AND a.entity_id = x.conversation_id::text AND a.action = 'agent.executed'
                     AND a.execution_id = x.id
                   ORDER BY a.seq DESC LIMIT 1) AS audited
           FROM agent_execution x WHERE x.id = $1 AND x.tenant_id = current_tenant_id()"#,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)?;
    let digest_ok = match (&row.finished_at, &row.audited) {
        (Some(_), Some(audited)) => Some(*audited == row.digest),
        _ => None,
    };
    Ok(ExecutionView {
        id: row.id,
        conversation_id: row.conversation_id,
        contact_id: row.contact_id,
        provider: row.provider,
        model: row.model,
        offline: row.offline,
        outcome: row.outcome,
        embedding_provider: row.embedding_provider,
        embedding_model: row.embedding_model,
        confidence: row.confidence,
        started_at: row.started_at,
        finished_at: row.finished_at,
        record_sha256: row.digest,
        record_digest_ok: digest_ok,
        record: row.record,
    })
}

/// An execution with the real values behind the placeholders its record uses.
pub struct Revealed {
    /// The record as stored, placeholders and all: the caller shows each value beside its
    /// placeholder, so what the model saw stays visible.
    pub view: ExecutionView,
    /// Each placeholder the record holds, `[EMAIL_1]`, with the value the vault keeps for it.
    pub values: Vec<(String, String)>,
}

/// Opens the conversation's vault for one execution and records that the caller saw its values
/// (an `execution.revealed` audit event naming the placeholders, never the values), on the
/// caller's transaction: no audit row, no reveal.
pub async fn reveal(
    conn: &mut sqlx::PgConnection,
    ctx: &Ctx,
    sealer: &Sealer,
    id: Uuid,
) -> Result<Revealed> {
    let view = execution(&mut *conn, id).await?;
    let sealed = crate::conversations::sealed_vaults(&mut *conn, &[view.conversation_id]).await?;
    let vault = runtime::open_sealed_vault(
        sealer,
        sealed.first().map(|(_, s)| s.as_slice()),
        view.conversation_id,
    )?;
    let text = view.record.to_string();
    let values: Vec<(String, String)> = vault
        .iter()
        .map(|(placeholder, value)| (placeholder.to_string(), value.to_string()))
        .filter(|(placeholder, _)| text.contains(placeholder.as_str()))
        .collect();
    let mut event = crate::audit::AuditEvent::new("execution.revealed", "agent_execution", id)
        .after(serde_json::json!({
            "placeholders": values.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        }));
    event.execution_id = Some(id);
    ctx.audit(&mut *conn, event).await?;
    Ok(Revealed { view, values })
}

/// Every execution about a contact, every column as stored (the record holds what was sent to
/// which provider and model, masked, and the decision), oldest first: for their export (DSR-1).
pub async fn export_executions(
    conn: &mut sqlx::PgConnection,
    contact_id: Uuid,
) -> Result<Vec<Value>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT to_jsonb(x) AS "row!" FROM agent_execution x
           WHERE contact_id = $1 AND tenant_id = current_tenant_id() ORDER BY started_at, id"#,
        contact_id
    )
    .fetch_all(conn)
    .await?)
}
