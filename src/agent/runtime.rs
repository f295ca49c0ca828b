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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::decision::{self, Action, Confidence, Decision, Weights};
use super::pipeline::{self, call_model, constant, Guard, GuardedRequest, Masked, Part};
use super::prompts::{TemplateUse, PROMPTS};
use super::provider::{ChatMessage, ChatResponse, Provider, ProviderError};
use super::settings::{self, AgentSettings, Embedder};
use super::tools::{self, CallScope, ToolEffect};
use crate::app::AppState;
use crate::audit::{self, AuditEvent, AuditSource};
use crate::error::Result;
use crate::events::{self, Event};
use crate::guardrails::{
    asks_for_human_review, schema, Context, KnownEntities, Lang, Vault, Verdict, HUMAN_REVIEW_RULE,
};
use crate::knowledge::{self, Embedded, Hit};
use crate::queue::{Job, Outcome};
use crate::reviews;

/// Below this similarity the offline responder does not quote a passage at all.
const OFFLINE_MIN_SCORE: f64 = 0.12;
const MAX_TOOL_ROUNDS: usize = 4;
const HISTORY: i64 = 12;
/// The hand-off reason when an agent run failed on every attempt of its job.
pub const AGENT_FAILED: &str = "agent_failed";

/// The `agent.run` job. A failure is retried by the queue; on the job's last attempt the
/// conversation is handed to a person instead (AGT-11: the message is not dropped, and is
/// not left waiting for an agent that will never answer).
pub async fn run_job(state: &AppState, job: &Job) -> Outcome {
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

/// Token counts summed over every provider call of a run.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct UsageTotals {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub embedding_tokens: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Record {
    pub execution_id: Uuid,
    pub conversation_id: Uuid,
    pub trigger_message_id: Uuid,
    pub provider: String,
    pub model: String,
    pub offline: bool,
    /// Everything the run was configured with, the embedder included (AGT-10).
    pub parameters: Value,
    pub templates: Vec<TemplateUse>,
    /// Each model call's messages exactly as sent (masked).
    pub requests: Vec<Value>,
    pub retrieval: Vec<Value>,
    pub tool_calls: Vec<Value>,
    pub responses: Vec<Value>,
    /// Every call to a provider (chat or embeddings): its attempts, latency, tokens and error.
    pub provider_calls: Vec<Value>,
    pub decision: Option<Decision>,
    pub confidence: Option<Confidence>,
    pub guardrails: Vec<pipeline::VerdictRecord>,
    pub outcome: String,
    pub reason: String,
    /// Milliseconds, to the microsecond.
    pub timings_ms: BTreeMap<&'static str, f64>,
    pub usage: UsageTotals,
    pub errors: Vec<String>,
}

impl Record {
    /// Records a chat call, answered or not.
    pub(super) fn chat_call(
        &mut self,
        provider: &Provider,
        result: &std::result::Result<ChatResponse, ProviderError>,
        started: Instant,
    ) {
        let mut call = json!({
            "kind": "chat", "provider": provider.provider_name(), "model": provider.chat_model(),
            "latency_ms": millis(started),
        });
        match result {
            Ok(answer) => {
                let usage = answer.usage();
                if let Some(u) = usage {
                    self.usage.prompt_tokens += u64::from(u.prompt_tokens);
                    self.usage.completion_tokens += u64::from(u.completion_tokens);
                }
                call["attempts"] = json!(answer.attempts());
                call["answered_by"] = json!(answer.model());
                call["prompt_tokens"] = json!(usage.map(|u| u.prompt_tokens));
                call["completion_tokens"] = json!(usage.map(|u| u.completion_tokens));
            }
            Err(e) => {
                call["attempts"] = json!(attempts_of(e));
                call["error"] = json!(e.to_string());
            }
        }
        self.provider_calls.push(call);
    }

    /// Records an embeddings call of a provider (the built-in embedder is no provider call).
    pub(super) fn embedding_call(
        &mut self,
        purpose: &str,
        embedder: &Embedder,
        result: &std::result::Result<Embedded, ProviderError>,
        started: Instant,
    ) {
        let Some(provider) = embedder.provider_name() else {
            return;
        };
        let mut call = json!({
            "kind": "embeddings", "purpose": purpose, "provider": provider, "model": embedder.model(),
            "latency_ms": millis(started),
        });
        match result {
            Ok(embedded) => {
                self.usage.embedding_tokens += u64::from(embedded.tokens.unwrap_or(0));
                call["attempts"] = json!(embedded.attempts);
                call["tokens"] = json!(embedded.tokens);
            }
            Err(e) => {
                call["attempts"] = json!(attempts_of(e));
                call["error"] = json!(e.to_string());
            }
        }
        self.provider_calls.push(call);
    }
}

/// How many HTTP requests a failed call made, when the error says.
fn attempts_of(error: &ProviderError) -> Option<u32> {
    match error {
        ProviderError::Unavailable { attempts, .. } => Some(*attempts),
        ProviderError::Config(_) => Some(0),
        _ => None,
    }
}

/// What the run decided to do, before it is carried out.
pub(super) enum Final {
    Reply {
        text: String,
        outcome: &'static str,
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
    handler: String,
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

async fn run(state: &AppState, tenant_id: Uuid, message_id: Uuid) -> Result<()> {
    let started = Instant::now();
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let facts = sqlx::query_as!(
        Facts,
        // Each row is reached through its key from the message (a LIMIT keeps the planner from
        // flattening the lookups): a generic plan made while the tables were small once scanned
        // every contact of the tenant here, on every turn.
        // Everything else a turn reads comes in the same round trip: the vault, the history,
        // and the versions of the tenant's settings and actions.
        r#"SELECT m.conversation_id, c.contact_id, c.handler, m.body, p.restricted,
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
    if facts.handler != "ai" {
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
        hand_to_humans(
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
    let settings = match state.agent_settings.get(tenant_id, settings_version) {
        Some(settings) => settings,
        None => {
            let loaded = Arc::new(settings::load(&mut tx, tenant_id).await?);
            // Under the version the settings themselves carry: a change committed since the
            // facts were read is then simply loaded again by the next run.
            state
                .agent_settings
                .put(tenant_id, loaded.config_version, loaded.clone());
            loaded
        }
    };
    let actions = match state.agent_actions.get(tenant_id, facts.actions_version) {
        Some(actions) => actions,
        None => {
            let loaded = Arc::new(reviews::tenant_actions(&mut tx).await?);
            state
                .agent_actions
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

/// Time since `t` in milliseconds, kept to the microsecond.
fn millis(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
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

fn stopped(verdict: &Verdict, record: &mut Record, guard: &Guard) -> Final {
    // The finding that decided the verdict (a PII finding may come first in the text).
    record.reason = verdict
        .findings
        .iter()
        .find(|f| f.action == verdict.action)
        .or(verdict.findings.first())
        .map(|f| f.rule_id.clone())
        .unwrap_or_default();
    match (verdict.action, &verdict.safe_reply) {
        (crate::guardrails::Action::Block, Some(text)) => Final::Reply {
            text: guard.unmask(text),
            outcome: "blocked",
        },
        _ => Final::Handoff {
            reason: format!("guardrail:{}", record.reason),
            suggestion: None,
            tell_customer: verdict.safe_reply.clone(),
        },
    }
}

async fn decide(
    scope: &CallScope<'_>,
    facts: &Facts,
    settings: &AgentSettings,
    provider: Option<&Provider>,
    guard: &mut Guard<'_>,
    record: &mut Record,
    history: &[sqlx_history::Row],
) -> std::result::Result<Final, Stop> {
    // 1. The customer's message: the inbound stage may stop it outright (AGT-4).
    let message = match guard.screen("customer_message", &facts.body) {
        Ok(s) => s,
        Err(verdict) => return Ok(stopped(&verdict, record, guard)),
    };

    // 2. Knowledge. A remote embedder is a provider too: it gets the masked text (AGT-2), and
    // its failure is a provider failure, retried by the client and then handed over (AGT-11).
    let t = Instant::now();
    let embedder = scope.embedder;
    let embedded = embedder
        .embed_query(&facts.body, Masked::from(message.clone()))
        .await;
    record.embedding_call("retrieval", embedder, &embedded, t);
    record.timings_ms.insert("embedding", millis(t));
    let query = match embedded {
        Ok(embedded) => embedded.into_query(embedder),
        Err(e) => {
            record.errors.push(format!("retrieval: {e}"));
            return Err(Stop::Provider(e));
        }
    };
    let mut tx = knowledge::SearchTx::begin(&scope.state.db, scope.tenant_id).await?;
    let hits = knowledge::search(&mut tx, scope.tenant_id, query, 5).await?;
    tx.commit().await?;
    record.timings_ms.insert("retrieval", millis(t));
    record.retrieval = hits
        .iter()
        .map(|h| json!({ "chunk_id": h.chunk_id, "article_id": h.article_id, "score": h.score }))
        .collect();
    let top = hits.first().map(|h| h.score);

    let weights = Weights {
        self_reported: f64::from(settings.weight_self),
        logprob: f64::from(settings.weight_logprob),
        retrieval: f64::from(settings.weight_retrieval),
        retrieval_scale: f64::from(settings.effective_retrieval_scale()),
    };
    let Some(provider) = provider else {
        return Ok(offline(&hits, settings, guard, record, weights));
    };

    // 3. Everything for the model passes the inbound stage: passages, profile, history, the
    // tenant's actions and tools.
    let mut passages = Vec::new();
    for h in &hits {
        if let Ok(s) = guard.screen(
            format!("knowledge:{}", h.chunk_id),
            &format!("[{}] {}: {}", h.chunk_id, h.title, h.content),
        ) {
            passages.push(s);
        }
    }
    let profile = guard
        .screen(
            "customer_profile",
            &format!(
                "name: {}\nemail: {}\nphone: {}\ncompany: {}",
                facts.name.as_deref().unwrap_or("unknown"),
                facts.email.as_deref().unwrap_or("unknown"),
                facts.phone.as_deref().unwrap_or("unknown"),
                facts.company.as_deref().unwrap_or("unknown")
            ),
        )
        .unwrap_or_else(|_| constant("(withheld)"));

    let actions = scope.actions;
    let action_list = actions
        .iter()
        .map(|a| format!("- {}: {}", a.name, a.description))
        .collect::<Vec<_>>()
        .join("\n");
    let tenant_name = guard
        .screen("tenant_name", &facts.tenant_name)
        .unwrap_or_else(|_| constant("our company"));
    let actions_text = guard
        .screen(
            "actions",
            if action_list.is_empty() {
                "(none)"
            } else {
                &action_list
            },
        )
        .unwrap_or_else(|_| constant("(none)"));
    let system = pipeline::render(
        &PROMPTS.system,
        BTreeMap::from([
            ("tenant_name", tenant_name),
            ("customer_profile", profile),
            (
                "knowledge",
                if passages.is_empty() {
                    constant("(no passages found)")
                } else {
                    pipeline::join(&passages, "\n\n")
                },
            ),
            ("actions", actions_text),
        ]),
    )
    .map_err(|e| Stop::Internal(anyhow::anyhow!("{e}").into()))?;
    record.templates = vec![
        PROMPTS.system.usage(),
        TemplateUse {
            name: "decision.schema.json",
            sha256: PROMPTS.decision_schema_hash.clone(),
        },
    ];

    let mut parts = vec![Part::System(system)];
    for h in history.iter().rev() {
        let Ok(text) = guard.screen(format!("history:{}", h.id), &h.body) else {
            continue;
        };
        parts.push(if h.direction == "inbound" {
            Part::User(text)
        } else {
            Part::Assistant(text)
        });
    }
    parts.push(Part::User(message));
    let tools = tools::specs(actions, guard);

    // 4. Ask, run tools, ask again, until a decision. The model's time is on record however
    // the loop ends (a decision, a hand-off, a provider failure).
    let t = Instant::now();
    let decided = converse(
        scope, settings, provider, guard, record, parts, tools, top, weights,
    )
    .await;
    record.timings_ms.insert("model", millis(t));
    decided
}

/// What is wrong with a `request_action` decision.
enum RequestProblem {
    /// No tenant action of that name (or of that material kind).
    Unknown,
    /// The arguments do not fit the action's schema.
    Invalid(String),
}

/// Checks a `request_action` decision against the tenant's actions and the action's schema
/// (with the real values the placeholders stand for, as the endpoint would get them).
fn check_request(
    parsed: &Decision,
    actions: &[reviews::TenantAction],
    guard: &Guard<'_>,
) -> std::result::Result<(), RequestProblem> {
    let request = parsed
        .action_request
        .as_ref()
        .ok_or(RequestProblem::Unknown)?;
    let action = tools::resolve_request(actions, &request.name).ok_or(RequestProblem::Unknown)?;
    schema::validate(
        &action.parameters,
        &tools::unmask_value(&request.arguments, guard),
    )
    .map_err(|e| RequestProblem::Invalid(e.into()))
}

#[allow(clippy::too_many_arguments)]
async fn converse(
    scope: &CallScope<'_>,
    settings: &AgentSettings,
    provider: &Provider,
    guard: &mut Guard<'_>,
    record: &mut Record,
    mut parts: Vec<Part>,
    mut tools: Vec<pipeline::ToolSpec>,
    top: Option<f64>,
    weights: Weights,
) -> std::result::Result<Final, Stop> {
    // An invalid tool call or action request is returned to the model once; the second one
    // hands the conversation over.
    let mut invalid = 0;
    let mut effects: Vec<ToolEffect> = Vec::new();
    for _round in 0..=MAX_TOOL_ROUNDS {
        let request = GuardedRequest::new(
            std::mem::take(&mut parts),
            std::mem::take(&mut tools),
            true,
            true,
        );
        record.requests.push(messages_json(request.messages()));
        let started = Instant::now();
        let answer = call_model(provider, &request).await;
        record.chat_call(provider, &answer, started);
        let answer = answer.map_err(Stop::Provider)?;
        record.responses.push(answer.raw().clone());
        (parts, tools) = pipeline::reopen(request);

        if answer.tool_calls().is_empty() {
            // 5. The decision, its confidence, and the outbound stage on the draft.
            let parsed = match decision::parse(answer.content().unwrap_or_default()) {
                Ok(d) => d,
                Err(e) => {
                    record.errors.push(e.to_string());
                    return Ok(Final::Handoff {
                        reason: "unparseable_decision".into(),
                        suggestion: answer.content().map(str::to_owned),
                        tell_customer: None,
                    });
                }
            };
            record.decision = Some(parsed.clone());
            if parsed.action == Action::RequestAction {
                match check_request(&parsed, scope.actions, guard) {
                    Ok(()) => {}
                    Err(RequestProblem::Unknown) => {
                        record.reason = "unknown_action".into();
                        return Ok(Final::handoff("unknown_action"));
                    }
                    Err(RequestProblem::Invalid(problem)) => {
                        invalid += 1;
                        record.tool_calls.push(json!({
                            "name": "request_action",
                            "action": parsed.action_request.as_ref().map(|r| r.name.clone()),
                            "arguments": parsed.action_request.as_ref().map(|r| r.arguments.clone()),
                            "result": problem, "effect": "invalid",
                        }));
                        if invalid >= 2 {
                            return Ok(Final::handoff("invalid_action_request"));
                        }
                        let feedback = guard
                            .screen(
                                "action_request:error",
                                &format!("error: the action request is invalid ({problem}); answer again with valid arguments"),
                            )
                            .unwrap_or_else(|_| constant("error: the action request is invalid; answer again with valid arguments"));
                        parts.push(Part::model_turn(&answer));
                        parts.push(Part::User(feedback));
                        continue;
                    }
                }
            }
            let confidence =
                decision::combine(Some(parsed.confidence), answer.logprobs(), top, weights);
            record.confidence = Some(confidence.clone());
            return decide_on(
                parsed,
                confidence.value,
                settings,
                scope.actions,
                guard,
                record,
            );
        }

        parts.push(Part::model_turn(&answer));
        for call in answer.tool_calls() {
            let (result, effect) = tools::call(scope, record, call, guard).await?;
            record.tool_calls.push(json!({ "id": call.id(), "name": call.name(), "arguments": call.arguments(), "result": result.as_str(), "effect": effect.label() }));
            if matches!(effect, ToolEffect::Invalid) {
                invalid += 1;
            }
            effects.push(effect);
            parts.push(Part::Tool {
                call: call.into(),
                content: result,
            });
        }
        if invalid >= 2 {
            return Ok(Final::handoff("invalid_tool_call"));
        }
        if let Some(f) = effects
            .iter()
            .find_map(|e| e.final_step(guard.ctx.language))
        {
            return Ok(f);
        }
    }
    Ok(Final::handoff("too_many_tool_rounds"))
}

fn decide_on(
    parsed: Decision,
    confidence: f64,
    settings: &AgentSettings,
    actions: &[reviews::TenantAction],
    guard: &mut Guard<'_>,
    record: &mut Record,
) -> std::result::Result<Final, Stop> {
    let verdict = guard.check_draft(&parsed.reply);
    if verdict.is_stopped() {
        return Ok(stopped(&verdict, record, guard));
    }
    let reply = guard.unmask(&verdict.masked_text);
    record.reason = parsed.reason_code.clone();
    match parsed.action {
        Action::Handoff => Ok(Final::Handoff {
            reason: non_empty(&parsed.reason_code, "model_handoff"),
            suggestion: Some(reply),
            tell_customer: None,
        }),
        Action::RequestAction => {
            // AGT-6: an action the model asks for in its decision always waits for a person
            // (checked against the action's schema before; a name no action answers to is
            // handed over, never turned into an item nothing could execute).
            let request = parsed.action_request.as_ref();
            let Some(action) = request.and_then(|r| tools::resolve_request(actions, &r.name))
            else {
                record.reason = "unknown_action".into();
                return Ok(Final::handoff("unknown_action"));
            };
            let arguments = request
                .map(|r| tools::unmask_value(&r.arguments, guard))
                .unwrap_or(Value::Null);
            Ok(Final::PendingReview {
                action_id: action.id,
                amount: action.amount(&arguments),
                name: action.name.clone(),
                arguments,
                tell_customer: if reply.trim().is_empty() {
                    tools::pending_message(guard.ctx.language).into()
                } else {
                    reply
                },
            })
        }
        Action::Reply if confidence < f64::from(settings.confidence_threshold) => {
            // AGT-5: not sure enough — a human gets the draft as a suggestion.
            Ok(Final::Handoff {
                reason: "low_confidence".into(),
                suggestion: Some(reply),
                tell_customer: None,
            })
        }
        Action::Reply => Ok(Final::Reply {
            text: reply,
            outcome: "replied",
        }),
    }
}

fn non_empty(s: &str, fallback: &str) -> String {
    if s.trim().is_empty() {
        fallback.into()
    } else {
        s.to_string()
    }
}

/// The offline responder: no model. It quotes the best-matching passage, with the retrieval
/// similarity (raw, and as the tenant's retrieval scale maps it) as its confidence, and says so.
fn offline(
    hits: &[Hit],
    settings: &AgentSettings,
    guard: &mut Guard<'_>,
    record: &mut Record,
    weights: Weights,
) -> Final {
    let best = hits.first().filter(|h| h.score >= OFFLINE_MIN_SCORE);
    let confidence = decision::combine(None, None, best.map(|h| h.score), weights);
    record.confidence = Some(confidence.clone());
    let Some(best) = best else {
        record.reason = "no_knowledge".into();
        return Final::handoff("no_knowledge");
    };
    let draft = format!(
        "From our help center — {}:\n{}",
        best.title,
        best.content.trim()
    );
    let parsed = Decision {
        action: Action::Reply,
        reply: draft,
        confidence: confidence.value,
        reason_code: "offline_quote".into(),
        cited_sources: vec![best.chunk_id.to_string()],
        action_request: None,
    };
    record.decision = Some(parsed.clone());
    decide_on(parsed, confidence.value, settings, &[], guard, record)
        .unwrap_or(Final::handoff("offline_failed"))
}

fn messages_json(messages: &[ChatMessage]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| match m {
                ChatMessage::System(t) => json!({ "role": "system", "content": t }),
                ChatMessage::User(t) => json!({ "role": "user", "content": t }),
                ChatMessage::Assistant { content, tool_calls } => json!({
                    "role": "assistant", "content": content,
                    "tool_calls": tool_calls.iter().map(|c| json!({ "id": c.id(), "name": c.name(), "arguments": c.arguments() })).collect::<Vec<_>>(),
                }),
                ChatMessage::Tool { tool_call_id, content } => json!({ "role": "tool", "tool_call_id": tool_call_id, "content": content }),
            })
            .collect(),
    )
}

fn open_vault(state: &AppState, sealed: Option<&[u8]>, conversation_id: Uuid) -> Result<Vault> {
    match sealed {
        None => Ok(Vault::new()),
        Some(sealed) => state
            .sealer
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

/// Gives the conversation to the humans, with a private note saying why (and the draft when
/// there is one).
pub(crate) async fn hand_to_humans(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    conversation_id: Uuid,
    reason: &str,
    suggestion: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE conversation SET handler = 'human', status = CASE WHEN status = 'resolved' THEN status ELSE 'open' END,
                updated_at = now()
         WHERE id = $1",
        conversation_id
    )
    .execute(&mut *conn)
    .await?;
    let note = match suggestion {
        Some(draft) => {
            format!("Handed to a human ({reason}). The AI's draft, not sent:\n\n{draft}")
        }
        None => format!("Handed to a human ({reason})."),
    };
    let inbox_id = sqlx::query_scalar!(
        "SELECT inbox_id FROM conversation WHERE id = $1",
        conversation_id
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO message (id, tenant_id, conversation_id, inbox_id, direction, author_kind, content_type, body, private)
         VALUES ($1, $2, $3, $4, 'outbound', $5, 'note', $6, true)",
        Uuid::now_v7(),
        tenant_id,
        conversation_id,
        inbox_id,
        if suggestion.is_some() { "ai" } else { "system" },
        note
    )
    .execute(&mut *conn)
    .await?;
    audit::record(
        conn,
        &AuditSource {
            tenant_id,
            actor_type: "agent",
            actor_id: None,
            meta: Default::default(),
        },
        AuditEvent::new("conversation.handed_off", "conversation", conversation_id)
            .after(json!({ "handler": "human", "reason": reason })),
    )
    .await?;
    events::publish(conn, &Event {
        tenant_id,
        kind: "conversation.updated".into(),
        conversation_id: Some(conversation_id),
        message_id: None,
        data: json!({ "action": "conversation.handed_off", "handler": "human", "reason": reason }),
    })
    .await?;
    Ok(())
}

/// The guardrail reason of a customer's request for human review (the `human_review` pack).
const HUMAN_REVIEW_REASON: &str = "guardrail:human-review.request";

/// The agent's last finished decision in a conversation before this run: what a customer's
/// request for human review is about.
async fn previous_decision(
    conn: &mut sqlx::PgConnection,
    conversation_id: Uuid,
    this_run: Uuid,
) -> Result<(Option<Uuid>, Value)> {
    let row = sqlx::query!(
        "SELECT id, outcome, record->'reason' AS reason, record->'decision' AS decision FROM agent_execution
         WHERE conversation_id = $1 AND id <> $2 AND outcome NOT IN ('running', 'abandoned')
         ORDER BY started_at DESC LIMIT 1",
        conversation_id,
        this_run
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or((None, Value::Null), |r| {
        (
            Some(r.id),
            json!({ "execution_id": r.id, "outcome": r.outcome, "reason": r.reason, "decision": r.decision }),
        )
    }))
}

/// A customer's request for human review on a conversation people handle: the item lands in
/// the queue (once per message, by its idempotency key) about the agent's last decision, and
/// the customer is told, in the tenant's wording of the pack's reply, that a person will look.
async fn human_review_without_run(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    facts: &Facts,
    message_id: Uuid,
) -> Result<()> {
    let (reviewed, decision) =
        previous_decision(&mut *tx, facts.conversation_id, Uuid::nil()).await?;
    let opened = reviews::open(
        &mut *tx,
        &AuditSource::system(tenant_id),
        reviews::NewItem {
            kind: "human_review",
            conversation_id: Some(facts.conversation_id),
            execution_id: reviewed,
            action: None,
            proposal: json!({ "request": facts.body, "decision": decision }),
            amount: None,
            confidence: None,
            findings: json!([]),
            requester: reviews::Requester::Customer,
            note: Some(facts.body.chars().take(4000).collect()),
            idempotency_key: format!("human-review:{message_id}"),
        },
    )
    .await?;
    if opened.is_some() {
        let settings = settings::load(&mut *tx, tenant_id).await?;
        let policy = settings::policy(state, tenant_id, &settings)?;
        let lang = Lang::from_stored(facts.language.as_deref());
        if let Some(text) = policy.safe_reply("human_review", lang) {
            crate::conversations::post_outbound(
                &mut *tx,
                tenant_id,
                facts.conversation_id,
                crate::conversations::Author::System,
                &text,
            )
            .await?;
        }
    }
    Ok(())
}

/// The guardrail verdicts of a run that found something, for a review item.
fn findings(record: &Record) -> Value {
    Value::Array(
        record
            .guardrails
            .iter()
            .filter(|v| !v.verdict.findings.is_empty())
            .filter_map(|v| serde_json::to_value(v).ok())
            .collect(),
    )
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    state: &AppState,
    tenant_id: Uuid,
    facts: &Facts,
    message_id: Uuid,
    mut record: Record,
    final_step: Final,
    guard: &Guard<'_>,
    actions: &[reviews::TenantAction],
    vault_before: Option<&[u8]>,
) -> Result<()> {
    let finishing = Instant::now();
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let handler = sqlx::query_scalar!(
        "SELECT handler FROM conversation WHERE id = $1 FOR UPDATE",
        facts.conversation_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let confidence = record.confidence.as_ref().map(|c| c.value as f32);
    if handler != "ai" {
        // A person took over while the agent was thinking: record, send nothing.
        record.outcome = "handed_off".into();
        record.reason = "taken_over_during_run".into();
    } else {
        match final_step {
            Final::Reply { text, outcome } => {
                send_as_agent(&mut tx, tenant_id, facts.conversation_id, &text).await?;
                record.outcome = outcome.into();
            }
            Final::Handoff {
                reason,
                suggestion,
                tell_customer,
            } => {
                if let Some(text) = tell_customer {
                    send_as_agent(
                        &mut tx,
                        tenant_id,
                        facts.conversation_id,
                        &guard.unmask(&text),
                    )
                    .await?;
                }
                hand_to_humans(
                    &mut tx,
                    tenant_id,
                    facts.conversation_id,
                    &reason,
                    suggestion.as_deref(),
                )
                .await?;
                let review = match reason.as_str() {
                    // AGT-5: the draft waits for a person as a suggestion.
                    "low_confidence" => Some((
                        "low_confidence",
                        json!({ "draft": suggestion }),
                        format!("low-confidence:{}", record.execution_id),
                        None,
                        None,
                    )),
                    // AGT-7: the customer asked for a person to review a decision.
                    HUMAN_REVIEW_REASON => {
                        let (reviewed, decision) =
                            previous_decision(&mut tx, facts.conversation_id, record.execution_id)
                                .await?;
                        Some((
                            "human_review",
                            json!({ "request": facts.body, "decision": decision }),
                            format!("human-review:{message_id}"),
                            Some(facts.body.chars().take(4000).collect::<String>()),
                            reviewed,
                        ))
                    }
                    _ => None,
                };
                if let Some((kind, proposal, key, note, reviewed)) = review {
                    // The decision under review, else this run (which handed the request over).
                    let execution_id = Some(reviewed.unwrap_or(record.execution_id));
                    reviews::open(
                        &mut tx,
                        &agent_source(tenant_id, record.execution_id),
                        reviews::NewItem {
                            kind,
                            conversation_id: Some(facts.conversation_id),
                            execution_id,
                            action: None,
                            proposal,
                            amount: None,
                            confidence,
                            findings: findings(&record),
                            requester: if kind == "human_review" {
                                reviews::Requester::Customer
                            } else {
                                reviews::Requester::Agent
                            },
                            note,
                            idempotency_key: key,
                        },
                    )
                    .await?;
                }
                record.reason = reason;
                record.outcome = "handed_off".into();
            }
            Final::PendingReview {
                action_id,
                name,
                arguments,
                amount,
                tell_customer,
            } => {
                // AGT-6: a material action waits for a named reviewer; nothing is executed here.
                let action = actions.iter().find(|a| a.id == action_id);
                let item = reviews::open(
                    &mut tx,
                    &agent_source(tenant_id, record.execution_id),
                    reviews::NewItem {
                        kind: "action",
                        conversation_id: Some(facts.conversation_id),
                        execution_id: Some(record.execution_id),
                        action,
                        proposal: json!({ "action": name, "arguments": arguments, "amount": amount }),
                        amount,
                        confidence,
                        findings: findings(&record),
                        requester: reviews::Requester::Agent,
                        note: None,
                        idempotency_key: format!("action:{}", record.execution_id),
                    },
                )
                .await?;
                send_as_agent(&mut tx, tenant_id, facts.conversation_id, &tell_customer).await?;
                record.outcome = "pending_review".into();
                record.reason = match item {
                    Some(item) => format!("review_item:{item}"),
                    None => "review_item_exists".into(),
                };
            }
        }
    }
    // Flagged findings let the run go on; a person looks at them afterwards.
    let flagged: std::collections::BTreeSet<&str> = record
        .guardrails
        .iter()
        .filter(|v| v.verdict.action == crate::guardrails::Action::Flag)
        .flat_map(|v| v.verdict.findings.iter())
        .filter(|f| f.action == crate::guardrails::Action::Flag)
        .map(|f| f.rule_id.as_str())
        .collect();
    if !flagged.is_empty() {
        reviews::open(
            &mut tx,
            &agent_source(tenant_id, record.execution_id),
            reviews::NewItem {
                kind: "guardrail_flag",
                conversation_id: Some(facts.conversation_id),
                execution_id: Some(record.execution_id),
                action: None,
                proposal: json!({ "outcome": record.outcome, "rules": flagged }),
                amount: None,
                confidence,
                findings: findings(&record),
                requester: reviews::Requester::Agent,
                note: None,
                idempotency_key: format!("flag:{}", record.execution_id),
            },
        )
        .await?;
    }
    let vault = serde_json::to_vec(&guard.ctx.vault)
        .map_err(|e| anyhow::anyhow!("conversation {} vault: {e}", facts.conversation_id))?;
    if vault_before != Some(vault.as_slice()) {
        let sealed = state
            .sealer
            .seal(&vault, &vault_context(facts.conversation_id));
        sqlx::query!(
            "INSERT INTO conversation_vault (conversation_id, tenant_id, sealed) VALUES ($1, $2, $3)
             ON CONFLICT (conversation_id) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()",
            facts.conversation_id,
            tenant_id,
            sealed
        )
        .execute(&mut *tx)
        .await?;
    }
    let outcome = if record.outcome == "blocked"
        || record.outcome == "replied"
        || record.outcome == "handed_off"
        || record.outcome == "pending_review"
    {
        record.outcome.clone()
    } else {
        "failed".to_string()
    };
    // Everything but this last write and the commit.
    record.timings_ms.insert("finish", millis(finishing));
    // This run is still the live one (no newer attempt superseded it) and no other run of the
    // message finished: checked here, after the conversation's lock, so of two runs racing
    // for one message exactly one posts. The digest is of the record as stored.
    let digest = sqlx::query_scalar!(
        r#"UPDATE agent_execution SET outcome = $2, confidence = $3, record = $4, finished_at = now()
           WHERE id = $1 AND outcome = 'running'
             AND NOT EXISTS (SELECT 1 FROM agent_execution x
                             WHERE x.tenant_id = current_tenant_id() AND x.conversation_id = $5
                               AND x.trigger_message_id = $6 AND x.id <> $1
                               AND x.outcome NOT IN ('running', 'abandoned'))
           RETURNING encode(sha256(convert_to(record::text, 'UTF8')), 'hex') AS "digest!""#,
        record.execution_id,
        outcome,
        confidence,
        serde_json::to_value(&record).unwrap_or_default(),
        facts.conversation_id,
        message_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(digest) = digest else {
        // Another attempt answered (or is answering) this message: nothing of this run's
        // outcome is posted; its record stays, marked abandoned.
        drop(tx);
        tracing::warn!(execution_id = %record.execution_id, %message_id, "another run answered this message; this one is abandoned");
        return close_execution(
            state,
            tenant_id,
            facts.conversation_id,
            record,
            "abandoned",
            "superseded",
        )
        .await;
    };
    audit_execution(
        &mut tx,
        tenant_id,
        facts.conversation_id,
        &record,
        &outcome,
        confidence,
        &digest,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The `agent.executed` audit entry: the run's summary and the SHA-256 digest of its record as
/// stored (PostgreSQL's canonical jsonb text), so a record changed afterwards no longer matches
/// the hash-chained audit (AGT-8).
async fn audit_execution(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    conversation_id: Uuid,
    record: &Record,
    outcome: &str,
    confidence: Option<f32>,
    digest: &str,
) -> Result<()> {
    let mut event = AuditEvent::new("agent.executed", "conversation", conversation_id).after(json!({
        "execution_id": record.execution_id, "trigger_message_id": record.trigger_message_id, "outcome": outcome,
        "reason": record.reason, "provider": record.provider, "model": record.model, "offline": record.offline,
        "confidence": confidence, "record_sha256": digest,
    }));
    event.execution_id = Some(record.execution_id);
    audit::record(conn, &agent_source(tenant_id, record.execution_id), event).await?;
    Ok(())
}

/// Finishes a run that posts nothing (`abandoned`: another attempt answered; `failed`: the
/// job gave up), with its record and audit entry. A row already finished is left alone.
async fn close_execution(
    state: &AppState,
    tenant_id: Uuid,
    conversation_id: Uuid,
    mut record: Record,
    outcome: &str,
    reason: &str,
) -> Result<()> {
    record.outcome = outcome.into();
    record.reason = reason.into();
    let confidence = record.confidence.as_ref().map(|c| c.value as f32);
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let digest = sqlx::query_scalar!(
        r#"UPDATE agent_execution SET outcome = $2, confidence = $3, record = $4, finished_at = now()
           WHERE id = $1 AND finished_at IS NULL
           RETURNING encode(sha256(convert_to(record::text, 'UTF8')), 'hex') AS "digest!""#,
        record.execution_id,
        outcome,
        confidence,
        serde_json::to_value(&record).unwrap_or_default()
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(digest) = digest {
        audit_execution(
            &mut tx,
            tenant_id,
            conversation_id,
            &record,
            outcome,
            confidence,
            &digest,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The job's last attempt failed: the conversation goes to a person (AGT-11), unless a run
/// answered the message after all or people already have it, and the attempts still marked
/// running are closed as failed.
async fn give_up(state: &AppState, tenant_id: Uuid, message_id: Uuid, error: &str) -> Result<()> {
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let Some(row) = sqlx::query!(
        r#"SELECT c.id AS conversation_id, c.handler,
                  EXISTS (SELECT 1 FROM agent_execution x
                          WHERE x.tenant_id = m.tenant_id AND x.conversation_id = m.conversation_id
                            AND x.trigger_message_id = m.id
                            AND x.outcome NOT IN ('running', 'abandoned')) AS "done!"
           FROM message m JOIN conversation c ON c.id = m.conversation_id
           WHERE m.id = $1 AND m.tenant_id = current_tenant_id()
           FOR UPDATE OF c"#,
        message_id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(());
    };
    if !row.done && row.handler == "ai" {
        hand_to_humans(&mut tx, tenant_id, row.conversation_id, AGENT_FAILED, None).await?;
    }
    let closed = sqlx::query!(
        r#"UPDATE agent_execution
           SET outcome = 'failed', finished_at = now(),
               record = record || jsonb_build_object('outcome', 'failed', 'reason', $3::text,
                                                     'errors', jsonb_build_array($4::text))
           WHERE tenant_id = current_tenant_id() AND conversation_id = $1 AND trigger_message_id = $2
             AND outcome = 'running'
           RETURNING id, provider, model, offline,
                     encode(sha256(convert_to(record::text, 'UTF8')), 'hex') AS "digest!""#,
        row.conversation_id,
        message_id,
        AGENT_FAILED,
        error
    )
    .fetch_all(&mut *tx)
    .await?;
    for execution in closed {
        let record = Record {
            execution_id: execution.id,
            conversation_id: row.conversation_id,
            trigger_message_id: message_id,
            provider: execution.provider,
            model: execution.model,
            offline: execution.offline,
            reason: AGENT_FAILED.into(),
            ..Record::default()
        };
        audit_execution(
            &mut tx,
            tenant_id,
            row.conversation_id,
            &record,
            "failed",
            None,
            &execution.digest,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
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
