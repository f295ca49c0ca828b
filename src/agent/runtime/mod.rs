//! One agent run (`agent.run`, enqueued for each customer message on a conversation the AI
//! handles): screen everything bound for the model, retrieve knowledge, ask the model (or the
//! offline responder) for a structured decision, check the draft, and then reply, hand off, or
//! hold a material action for a reviewer. Every run leaves a complete execution record
//! (AGT-8), linked into the hash-chained audit by the SHA-256 digest of the record.
//!
//! A message is answered once (AGT-11). The job queue delivers at least once, and a run whose
//! worker stalled past its lease can meet a second attempt for the same message. So a new
//! attempt marks the earlier ones still `running` as `abandoned` when it starts, and a run
//! posts its outcome only if, in the finishing transaction (which locks the conversation), its
//! own row is still `running` and no other run of the message has finished. The loser keeps its
//! record (it did send the masked conversation to the provider), marked `abandoned`. When the
//! job's last attempt fails, the conversation goes to a person (`agent_failed`).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use uuid::Uuid;

use super::pipeline::Guard;
use super::provider::ProviderError;
use super::settings::{self, Embedder};
use super::tools::CallScope;
use super::AgentState;
use crate::audit::AuditSource;
use crate::conversations::{self, Handler};
use crate::error::Result;
use crate::events;
use crate::guardrails::{
    asks_for_human_review, Context, KnownEntities, Lang, Vault, HUMAN_REVIEW_RULE,
};
use crate::queue::{Job, Outcome};
use crate::reviews;

mod decide;
mod finish;
mod record;

use decide::decide;
use finish::{finish, give_up, human_review_without_run, HUMAN_REVIEW_REASON};
use record::millis;
pub use record::{Record, RunOutcome, UsageTotals};

const HISTORY: i64 = 12;
/// The hand-off reason when an agent run failed on every attempt of its job.
pub const AGENT_FAILED: &str = "agent_failed";

/// The `agent.run` job. A failure is retried by the queue; on the job's last attempt the
/// conversation is handed to a person instead (AGT-11: the message is not dropped, and is
/// not left waiting for an agent that will never answer).
pub async fn run_job(state: &AgentState, job: &Job) -> Outcome {
    let Some(message_id) = job
        .payload
        .get("message_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Outcome::Fail {
            error: "the job names no message".into(),
        };
    };
    match run(state, job.tenant_id, message_id).await {
        Ok(()) => Outcome::Done,
        Err(e) if job.attempts >= job.max_attempts => {
            let error = e.to_string();
            tracing::error!(%message_id, %error, "the agent run failed on its last attempt; handing over");
            if let Err(handoff) = give_up(state, job.tenant_id, message_id, &error).await {
                tracing::error!(%message_id, error = %handoff, "handing the conversation over failed too");
            }
            Outcome::Fail { error }
        }
        Err(e) => Outcome::Retry {
            error: e.to_string(),
            after: None,
        },
    }
}

/// What the run decided to do, before it is carried out.
pub(super) enum Final {
    Reply {
        text: String,
        outcome: RunOutcome,
    },
    Handoff {
        reason: String,
        suggestion: Option<String>,
        tell_customer: Option<String>,
    },
    PendingReview {
        action_id: Uuid,
        name: String,
        arguments: Value,
        amount: Option<f64>,
        tell_customer: String,
    },
}

impl Final {
    fn handoff(reason: &str) -> Final {
        Final::Handoff {
            reason: reason.into(),
            suggestion: None,
            tell_customer: None,
        }
    }
}

struct Facts {
    conversation_id: Uuid,
    contact_id: Uuid,
    handler: Handler,
    body: String,
    restricted: bool,
    tenant_name: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    /// The conversation's language code, once known.
    language: Option<String>,
    /// Whether a run for this message already finished.
    done: bool,
    /// The conversation's sealed vault, if it has one yet.
    vault: Option<Vec<u8>>,
    /// The messages before this one, newest first (`sqlx_history::Row` as JSON).
    history: serde_json::Value,
    /// Versions of the tenant's agent settings (none stored: the defaults) and actions: a run
    /// reuses what this process loaded for the same versions.
    settings_version: Option<i64>,
    actions_version: i64,
}

async fn run(state: &AgentState, tenant_id: Uuid, message_id: Uuid) -> Result<()> {
    let started = Instant::now();
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let facts = sqlx::query_as!(
        Facts,
        // Each row is reached through its key from the message (a LIMIT keeps the planner from
        // flattening the lookups): a generic plan made while the tables were small once scanned
        // every contact of the tenant here, on every turn.
        // Everything else a turn reads comes in the same round trip: the vault, the history,
        // and the versions of the tenant's settings and actions.
        r#"SELECT m.conversation_id, c.contact_id, c.handler AS "handler: Handler", m.body, p.restricted,
                  t.name AS tenant_name, p.name AS "name?", p.email AS "email?", p.phone AS "phone?",
                  a.name AS "company?", c.language AS "language?",
                  EXISTS (SELECT 1 FROM agent_execution x
                          WHERE x.tenant_id = m.tenant_id AND x.conversation_id = m.conversation_id
                            AND x.trigger_message_id = m.id
                            AND x.outcome NOT IN ('running', 'abandoned')) AS "done!",
                  (SELECT sealed FROM conversation_vault v
                   WHERE v.conversation_id = m.conversation_id) AS "vault?",
                  (SELECT coalesce(jsonb_agg(to_jsonb(h) ORDER BY h.id DESC), '[]'::jsonb)
                   FROM (SELECT id, direction, author_kind, body FROM message
                         WHERE conversation_id = m.conversation_id AND NOT private AND id < m.id
                         ORDER BY id DESC LIMIT $2) h) AS "history!",
                  (SELECT config_version FROM agent_settings s
                   WHERE s.tenant_id = m.tenant_id) AS "settings_version?",
                  t.actions_version
           FROM message m
           CROSS JOIN LATERAL (SELECT contact_id, handler, language FROM conversation
                               WHERE id = m.conversation_id LIMIT 1) c
           CROSS JOIN LATERAL (SELECT restricted, name, email, phone, account_id FROM contact
                               WHERE id = c.contact_id LIMIT 1) p
           LEFT JOIN LATERAL (SELECT name FROM account WHERE id = p.account_id LIMIT 1) a ON true
           CROSS JOIN LATERAL (SELECT name, actions_version FROM tenant
                               WHERE id = m.tenant_id LIMIT 1) t
           WHERE m.id = $1 AND m.tenant_id = current_tenant_id()"#,
        message_id,
        HISTORY
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(facts) = facts else { return Ok(()) };
    // A run that already finished (the job ran again after a crash) is not repeated.
    if facts.done {
        return Ok(());
    }
    if facts.handler != Handler::Ai {
        // People handle the conversation: no model runs. A customer asking for a person to
        // review a decision is still heard (AGT-7): the ingest queued this run for that alone.
        if asks_for_human_review(&facts.body) {
            human_review_without_run(state, &mut tx, tenant_id, &facts, message_id).await?;
            tx.commit().await?;
        }
        return Ok(());
    }
    if facts.restricted {
        // DSR-4: a restricted contact is never processed by the agent; humans only.
        conversations::hand_to_humans(
            &mut tx,
            tenant_id,
            facts.conversation_id,
            "restricted_contact",
            None,
        )
        .await?;
        tx.commit().await?;
        return Ok(());
    }
    let settings_version = facts.settings_version.unwrap_or(0);
    let settings = match state.settings.get(tenant_id, settings_version) {
        Some(settings) => settings,
        None => {
            let loaded = Arc::new(settings::load(&mut tx, tenant_id).await?);
            // Under the version the settings themselves carry: a change committed since the
            // facts were read is then simply loaded again by the next run.
            state
                .settings
                .put(tenant_id, loaded.config_version, loaded.clone());
            loaded
        }
    };
    let actions = match state.actions.get(tenant_id, facts.actions_version) {
        Some(actions) => actions,
        None => {
            let loaded = Arc::new(reviews::tenant_actions(&mut tx).await?);
            state
                .actions
                .put(tenant_id, facts.actions_version, loaded.clone());
            loaded
        }
    };
    let vault = open_vault(state, facts.vault.as_deref(), facts.conversation_id)?;
    // What the vault holds now: unless this turn meets a value it has not seen, it is not
    // written back.
    let vault_before = serde_json::to_vec(&vault).ok();
    let history: Vec<sqlx_history::Row> = serde_json::from_value(facts.history.clone())
        .map_err(|e| anyhow::anyhow!("history of conversation {}: {e}", facts.conversation_id))?;

    let policy = settings::policy(state, tenant_id, &settings)?;
    let provider = settings::provider(state, tenant_id, &settings)?;
    let embedder = settings::embedder_for(state, tenant_id, &settings, provider.as_ref())?;
    let execution_id = Uuid::now_v7();
    let mut record = Record {
        execution_id,
        conversation_id: facts.conversation_id,
        trigger_message_id: message_id,
        provider: provider
            .as_ref()
            .map(|p| p.provider_name().to_string())
            .unwrap_or_else(|| "offline".into()),
        model: provider
            .as_ref()
            .map(|p| p.chat_model().to_string())
            .unwrap_or_else(|| "offline-knowledge-responder".into()),
        offline: provider.is_none(),
        parameters: json!({
            "temperature": settings.temperature, "timeout_ms": settings.timeout_ms, "max_retries": settings.max_retries,
            "confidence_threshold": settings.confidence_threshold, "config_version": settings.config_version,
            "weights": { "self_reported": settings.weight_self, "logprob": settings.weight_logprob,
                         "retrieval": settings.weight_retrieval, "retrieval_scale": settings.effective_retrieval_scale() },
            // AGT-10: the embeddings API sees the masked message as well.
            "embedding": { "provider": embedder.provider_name().unwrap_or("offline"), "model": embedder.model(),
                           "dimensions": settings.embedding_dims.filter(|_| !embedder.is_local()), "local": embedder.is_local() },
        }),
        ..Record::default()
    };
    // The run is on record before anything leaves: in the transaction that read its facts.
    start_execution(&mut tx, tenant_id, &facts, &record, &embedder).await?;
    tx.commit().await?;
    record.timings_ms.insert("prepare", millis(started));

    let mut known = KnownEntities::new();
    for (value, add) in [
        (
            &facts.name,
            KnownEntities::with_name as fn(KnownEntities, &str) -> KnownEntities,
        ),
        (&facts.email, KnownEntities::with_email),
        (&facts.phone, KnownEntities::with_phone),
        (&facts.company, KnownEntities::with_company),
    ] {
        if let Some(v) = value {
            known = add(known, v);
        }
    }
    let mut context = Context::new(vault, known);
    context.language = Lang::from_stored(facts.language.as_deref());
    let mut guard = Guard::new(&policy, context);
    // AGT-7 whatever the stored configuration: one saved before the settings API refused to
    // turn the human_review pack off may lack it, and the request is still heard.
    let pack_off = policy
        .options()
        .packs
        .as_ref()
        .is_some_and(|packs| !packs.iter().any(|p| p == settings::REQUIRED_PACK));
    let decided = if pack_off && asks_for_human_review(&facts.body) {
        record.reason = HUMAN_REVIEW_RULE.into();
        Ok(Final::Handoff {
            reason: HUMAN_REVIEW_REASON.into(),
            suggestion: None,
            tell_customer: policy.safe_reply("human_review", guard.ctx.language),
        })
    } else {
        let scope = CallScope {
            state,
            tenant_id,
            conversation_id: facts.conversation_id,
            contact_id: facts.contact_id,
            actions: &actions,
            embedder: &embedder,
        };
        decide(
            &scope,
            &facts,
            &settings,
            provider.as_ref(),
            &mut guard,
            &mut record,
            &history,
        )
        .await
    };
    let final_step = match decided {
        Ok(f) => f,
        Err(Stop::Provider(e)) => {
            record.errors.push(e.to_string());
            Final::handoff("provider_unavailable")
        }
        Err(Stop::Internal(e)) => return Err(e),
    };
    record.guardrails = std::mem::take(&mut guard.verdicts);
    record.timings_ms.insert("total", millis(started));
    // The reply's live events go out after the commit, off this transaction: a transaction
    // that notifies holds a database-wide lock through its commit (see `events::deferred`).
    events::deferred(
        &state.notifier,
        finish(
            state,
            tenant_id,
            &facts,
            message_id,
            record,
            final_step,
            &guard,
            &actions,
            vault_before.as_deref(),
        ),
    )
    .await
}

/// Why a run stopped short of a decision: the provider failed (hand over), or something inside
/// the platform did (the job retries).
pub(super) enum Stop {
    Provider(ProviderError),
    Internal(crate::error::Error),
}

impl From<crate::error::Error> for Stop {
    fn from(e: crate::error::Error) -> Self {
        Stop::Internal(e)
    }
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::Internal(e.into())
    }
}

fn open_vault(state: &AgentState, sealed: Option<&[u8]>, conversation_id: Uuid) -> Result<Vault> {
    open_sealed_vault(&state.sealer, sealed, conversation_id)
}

/// Opens a conversation's PII vault as the agent sealed it (bound to the conversation), for
/// whoever must see the values behind the placeholders: a person's export (DSR-1).
pub fn open_sealed_vault(
    sealer: &crate::crypto::Sealer,
    sealed: Option<&[u8]>,
    conversation_id: Uuid,
) -> Result<Vault> {
    match sealed {
        None => Ok(Vault::new()),
        Some(sealed) => sealer
            .open_json(sealed, &vault_context(conversation_id))
            .map_err(|e| anyhow::anyhow!("conversation {conversation_id} vault: {e}").into()),
    }
}

fn vault_context(conversation_id: Uuid) -> String {
    format!("vault:{conversation_id}")
}

async fn start_execution(
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    facts: &Facts,
    record: &Record,
    embedder: &Embedder,
) -> Result<()> {
    // The "running" marker need not wait for the disk: if the server dies before the flush the
    // marker is lost with the run, and the job, still leased, runs again with a new one. The
    // finished record is written with a full, synchronous commit.
    // `set_config(…, true)` is `SET LOCAL`, in the same round trip as the insert, and so is
    // closing the attempts this one supersedes (their worker crashed or lost the lease): they
    // can no longer post anything (see `finish`).
    sqlx::query!(
        r#"WITH superseded AS (
               UPDATE agent_execution
               SET outcome = 'abandoned',
                   record = record || jsonb_build_object('outcome', 'abandoned', 'reason', 'superseded_by:' || $1::uuid)
               WHERE tenant_id = $2 AND conversation_id = $3 AND trigger_message_id = $5 AND outcome = 'running'
               RETURNING id)
           INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, trigger_message_id, provider, model,
                                        offline, record, embedding_provider, embedding_model)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
           FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"#,
        record.execution_id,
        tenant_id,
        facts.conversation_id,
        facts.contact_id,
        record.trigger_message_id,
        record.provider,
        record.model,
        record.offline,
        serde_json::to_value(record).unwrap_or_default(),
        embedder.provider_name(),
        embedder.provider_name().map(|_| embedder.model())
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The agent's own audit identity.
fn agent_source(tenant_id: Uuid, execution_id: Uuid) -> AuditSource {
    AuditSource {
        tenant_id,
        actor_type: "agent",
        actor_id: Some(execution_id.to_string()),
        meta: Default::default(),
    }
}

/// Stores and announces a message the agent sends to the customer.
pub(super) async fn send_as_agent(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    conversation_id: Uuid,
    text: &str,
) -> Result<Uuid> {
    crate::conversations::post_outbound(
        conn,
        tenant_id,
        conversation_id,
        crate::conversations::Author::Ai,
        text,
    )
    .await
}

pub mod sqlx_history {
    #[derive(serde::Deserialize)]
    pub struct Row {
        pub id: uuid::Uuid,
        pub direction: String,
        pub author_kind: String,
        pub body: String,
    }
}
