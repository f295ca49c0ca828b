//! One agent run (`agent.run`, enqueued for each customer message on a conversation the AI
//! handles): screen everything bound for the model, retrieve knowledge, ask the model (or the
//! offline responder) for a structured decision, check the draft, and then reply, hand off, or
//! hold a material action for a reviewer. Every run leaves a complete execution record
//! (AGT-8), linked into the hash-chained audit.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::decision::{self, Action, Confidence, Decision, Weights};
use super::pipeline::{self, call_model, constant, Guard, GuardedRequest, Part};
use super::prompts::{TemplateUse, PROMPTS};
use super::provider::{ChatMessage, ProviderError};
use super::settings::{self, AgentSettings, Embedder};
use super::tools::{self, ToolEffect};
use crate::app::AppState;
use crate::audit::{self, AuditEvent, AuditSource};
use crate::error::Result;
use crate::events::{self, Event};
use crate::guardrails::{Context, KnownEntities, Lang, Vault, Verdict};
use crate::knowledge::{self, Hit};
use crate::queue::{Job, NewJob, Outcome};
use crate::reviews;

pub const RUN_JOB: &str = "agent.run";
/// Below this similarity the offline responder does not quote a passage at all.
const OFFLINE_MIN_SCORE: f64 = 0.12;
const MAX_TOOL_ROUNDS: usize = 4;
const HISTORY: i64 = 12;

/// The agent run a customer's message asks for. The ingest statement enqueues it together with
/// the message, so a stored message on an AI-handled conversation always has its run.
pub fn run_for(message_id: Uuid) -> NewJob {
    NewJob::new(
        RUN_JOB,
        format!("agent:{message_id}"),
        json!({ "message_id": message_id }),
    )
}

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
        Err(e) => Outcome::Retry {
            error: e.to_string(),
            after: None,
        },
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Record {
    pub execution_id: Uuid,
    pub conversation_id: Uuid,
    pub trigger_message_id: Uuid,
    pub provider: String,
    pub model: String,
    pub offline: bool,
    pub parameters: Value,
    pub templates: Vec<TemplateUse>,
    /// Each model call's messages exactly as sent (masked).
    pub requests: Vec<Value>,
    pub retrieval: Vec<Value>,
    pub tool_calls: Vec<Value>,
    pub responses: Vec<Value>,
    pub decision: Option<Decision>,
    pub confidence: Option<Confidence>,
    pub guardrails: Vec<pipeline::VerdictRecord>,
    pub outcome: String,
    pub reason: String,
    /// Milliseconds, to the microsecond.
    pub timings_ms: BTreeMap<&'static str, f64>,
    pub usage: Value,
    pub errors: Vec<String>,
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
        action_id: Option<Uuid>,
        name: String,
        arguments: Value,
        amount: Option<f64>,
        tell_customer: String,
    },
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
}

async fn run(state: &AppState, tenant_id: Uuid, message_id: Uuid) -> Result<()> {
    let started = Instant::now();
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let facts = sqlx::query_as!(
        Facts,
        // Each row is reached through its key from the message (a LIMIT keeps the planner from
        // flattening the lookups): a generic plan made while the tables were small once scanned
        // every contact of the tenant here, on every turn.
        r#"SELECT m.conversation_id, c.contact_id, c.handler, m.body, p.restricted,
                  t.name AS tenant_name, p.name AS "name?", p.email AS "email?", p.phone AS "phone?",
                  a.name AS "company?", c.language AS "language?",
                  EXISTS (SELECT 1 FROM agent_execution x
                          WHERE x.tenant_id = m.tenant_id AND x.conversation_id = m.conversation_id
                            AND x.trigger_message_id = m.id AND x.outcome <> 'running') AS "done!"
           FROM message m
           CROSS JOIN LATERAL (SELECT contact_id, handler, language FROM conversation
                               WHERE id = m.conversation_id LIMIT 1) c
           CROSS JOIN LATERAL (SELECT restricted, name, email, phone, account_id FROM contact
                               WHERE id = c.contact_id LIMIT 1) p
           LEFT JOIN LATERAL (SELECT name FROM account WHERE id = p.account_id LIMIT 1) a ON true
           CROSS JOIN LATERAL (SELECT name FROM tenant WHERE id = m.tenant_id LIMIT 1) t
           WHERE m.id = $1 AND m.tenant_id = current_tenant_id()"#,
        message_id
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
        if reviews::asks_for_human_review(&facts.body) {
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
    let settings = settings::load(&mut tx, tenant_id).await?;
    let vault = load_vault(state, &mut tx, facts.conversation_id).await?;
    let history = sqlx::query_as!(
        sqlx_history::Row,
        "SELECT id, direction, author_kind, body FROM message
         WHERE conversation_id = $1 AND NOT private AND id < $2 ORDER BY id DESC LIMIT $3",
        facts.conversation_id,
        message_id,
        HISTORY
    )
    .fetch_all(&mut *tx)
    .await?;
    let actions = tools::tenant_actions(&mut tx).await?;

    let policy = settings::policy(state, tenant_id, &settings)?;
    let provider = settings::provider(state, tenant_id, &settings)?;
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
        }),
        ..Record::default()
    };
    // The run is on record before anything leaves: in the transaction that read its facts.
    start_execution(&mut tx, tenant_id, &facts, &record).await?;
    tx.commit().await?;

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
    let decided = if pack_off && reviews::asks_for_human_review(&facts.body) {
        record.reason = reviews::HUMAN_REVIEW_RULE.into();
        Ok(Final::Handoff {
            reason: HUMAN_REVIEW_REASON.into(),
            suggestion: None,
            tell_customer: policy.safe_reply("human_review", guard.ctx.language),
        })
    } else {
        decide(
            state,
            tenant_id,
            &facts,
            &settings,
            provider.as_ref(),
            &mut guard,
            &mut record,
            &history,
            &actions,
        )
        .await
    };
    let final_step = match decided {
        Ok(f) => f,
        Err(Stop::Provider(e)) => {
            record.errors.push(e.to_string());
            Final::Handoff {
                reason: "provider_unavailable".into(),
                suggestion: None,
                tell_customer: None,
            }
        }
        Err(Stop::Internal(e)) => return Err(e),
    };
    record.guardrails = std::mem::take(&mut guard.verdicts);
    record.timings_ms.insert("total", millis(started));
    finish(
        state, tenant_id, &facts, message_id, record, final_step, &guard, &actions,
    )
    .await
}

/// Time since `t` in milliseconds, kept to the microsecond.
fn millis(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}

enum Stop {
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

#[allow(clippy::too_many_arguments)]
async fn decide(
    state: &AppState,
    tenant_id: Uuid,
    facts: &Facts,
    settings: &AgentSettings,
    provider: Option<&super::provider::Provider>,
    guard: &mut Guard<'_>,
    record: &mut Record,
    history: &[sqlx_history::Row],
    actions: &[tools::TenantAction],
) -> std::result::Result<Final, Stop> {
    // 1. The customer's message: the inbound stage may stop it outright (AGT-4).
    let message = match guard.screen("customer_message", &facts.body) {
        Ok(s) => s,
        Err(verdict) => return Ok(stopped(&verdict, record, guard)),
    };

    // 2. Knowledge. A remote embedder is a provider too: it gets the masked text.
    let t = Instant::now();
    let embedder = match provider {
        Some(p) => Embedder::Remote {
            provider: p.clone(),
        },
        None => Embedder::Local,
    };
    let query = if embedder.is_local() {
        facts.body.clone()
    } else {
        message.as_str().to_string()
    };
    let embedded = embedder.embed(&[query]).await;
    record.timings_ms.insert("embedding", millis(t));
    let hits = match embedded {
        Ok(mut v) => {
            let mut tx = state.db.tenant_tx(tenant_id).await?;
            let hits =
                knowledge::search(&mut tx, tenant_id, v.pop().unwrap_or_default(), 5).await?;
            tx.commit().await?;
            hits
        }
        Err(e) => {
            record.errors.push(format!("retrieval: {e}"));
            if provider.is_some() {
                return Err(Stop::Provider(ProviderError::Unavailable {
                    attempts: 1,
                    last: e.to_string(),
                }));
            }
            Vec::new()
        }
    };
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
    };
    let Some(provider) = provider else {
        return Ok(offline(&hits, settings, guard, record, weights));
    };

    // 3. Everything for the model passes the inbound stage: passages, profile, history.
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
            Part::Assistant {
                content: Some(text),
                tool_calls: vec![],
            }
        });
    }
    parts.push(Part::User(message));

    // 4. Ask, run tools, ask again, until a decision.
    let tool_specs = tools::specs(actions);
    let schema = Some(("decision".to_string(), PROMPTS.decision_schema.clone()));
    let mut invalid_calls = 0;
    let mut effects: Vec<ToolEffect> = Vec::new();
    let t = Instant::now();
    let mut response = None;
    for _round in 0..=MAX_TOOL_ROUNDS {
        let request = GuardedRequest::new(
            std::mem::take(&mut parts),
            tool_specs.clone(),
            schema.clone(),
            true,
        );
        record.requests.push(messages_json(request.messages()));
        let answer = call_model(provider, &request)
            .await
            .map_err(Stop::Provider)?;
        record.responses.push(answer.raw.clone());
        record.usage = json!({ "prompt_tokens": answer.usage.as_ref().map(|u| u.prompt_tokens), "completion_tokens": answer.usage.as_ref().map(|u| u.completion_tokens) });
        parts = rebuild(request);
        if answer.tool_calls.is_empty() {
            response = Some(answer);
            break;
        }
        parts.push(Part::model_turn(&answer));
        for call in &answer.tool_calls {
            let (result, effect) = tools::call(
                state,
                tenant_id,
                facts.conversation_id,
                facts.contact_id,
                record.execution_id,
                actions,
                call,
                guard,
            )
            .await?;
            record.tool_calls.push(json!({ "id": call.id, "name": call.name, "arguments": call.arguments, "result": result.as_str(), "effect": effect.label() }));
            if matches!(effect, ToolEffect::Invalid) {
                invalid_calls += 1;
            }
            effects.push(effect);
            parts.push(Part::Tool {
                call_id: call.id.clone(),
                content: result,
            });
        }
        if invalid_calls >= 2 {
            return Ok(Final::Handoff {
                reason: "invalid_tool_call".into(),
                suggestion: None,
                tell_customer: None,
            });
        }
        if let Some(f) = effects
            .iter()
            .find_map(|e| e.final_step(guard.ctx.language))
        {
            return Ok(f);
        }
    }
    record.timings_ms.insert("model", millis(t));
    let Some(response) = response else {
        return Ok(Final::Handoff {
            reason: "too_many_tool_rounds".into(),
            suggestion: None,
            tell_customer: None,
        });
    };

    // 5. The decision, its confidence, and the outbound stage on the draft.
    let parsed = match decision::parse(response.content.as_deref().unwrap_or_default()) {
        Ok(d) => d,
        Err(e) => {
            record.errors.push(e);
            return Ok(Final::Handoff {
                reason: "unparseable_decision".into(),
                suggestion: response.content.clone(),
                tell_customer: None,
            });
        }
    };
    let confidence = decision::combine(
        Some(parsed.confidence),
        response.logprobs.as_deref(),
        top,
        weights,
    );
    record.decision = Some(parsed.clone());
    record.confidence = Some(confidence.clone());
    decide_on(parsed, confidence.value, settings, actions, guard, record)
}

fn decide_on(
    parsed: Decision,
    confidence: f64,
    settings: &AgentSettings,
    actions: &[tools::TenantAction],
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
            let request = parsed
                .action_request
                .clone()
                .unwrap_or(decision::ActionRequest {
                    name: String::new(),
                    arguments: Value::Null,
                });
            let action = actions.iter().find(|a| a.name == request.name);
            let arguments = unmask_json(&request.arguments, guard);
            Ok(Final::PendingReview {
                action_id: action.map(|a| a.id),
                amount: action.and_then(|a| a.amount(&arguments)),
                name: if request.name.is_empty() {
                    "unspecified".into()
                } else {
                    request.name
                },
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

fn unmask_json(value: &Value, guard: &Guard<'_>) -> Value {
    match value {
        Value::String(s) => Value::String(guard.unmask(s)),
        Value::Array(a) => Value::Array(a.iter().map(|v| unmask_json(v, guard)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), unmask_json(v, guard)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The offline responder: no model. It quotes the best-matching passage, with the retrieval
/// similarity as its confidence, and says so.
fn offline(
    hits: &[Hit],
    settings: &AgentSettings,
    guard: &mut Guard<'_>,
    record: &mut Record,
    weights: Weights,
) -> Final {
    let best = hits.first().filter(|h| h.score >= OFFLINE_MIN_SCORE);
    let confidence = decision::combine(None, None, best.map(|h| (h.score * 2.0).min(1.0)), weights);
    record.confidence = Some(confidence.clone());
    let Some(best) = best else {
        record.reason = "no_knowledge".into();
        return Final::Handoff {
            reason: "no_knowledge".into(),
            suggestion: None,
            tell_customer: None,
        };
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
    decide_on(parsed, confidence.value, settings, &[], guard, record).unwrap_or(Final::Handoff {
        reason: "offline_failed".into(),
        suggestion: None,
        tell_customer: None,
    })
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
                    "tool_calls": tool_calls.iter().map(|c| json!({ "id": c.id, "name": c.name, "arguments": c.arguments })).collect::<Vec<_>>(),
                }),
                ChatMessage::Tool { tool_call_id, content } => json!({ "role": "tool", "tool_call_id": tool_call_id, "content": content }),
            })
            .collect(),
    )
}

/// The conversation so far, to continue it in the next round (already screened).
fn rebuild(request: GuardedRequest) -> Vec<Part> {
    pipeline::reopen(request)
}

async fn load_vault(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    conversation_id: Uuid,
) -> Result<Vault> {
    let sealed = sqlx::query_scalar!(
        "SELECT sealed FROM conversation_vault WHERE conversation_id = $1",
        conversation_id
    )
    .fetch_optional(conn)
    .await?;
    match sealed {
        None => Ok(Vault::new()),
        Some(sealed) => state
            .sealer
            .open_json(&sealed, &vault_context(conversation_id))
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
) -> Result<()> {
    // The "running" marker need not wait for the disk: if the server dies before the flush the
    // marker is lost with the run, and the job, still leased, runs again with a new one. The
    // finished record is written with a full, synchronous commit.
    // `set_config(…, true)` is `SET LOCAL`, in the same round trip as the insert.
    sqlx::query!(
        "INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, trigger_message_id, provider, model, offline, record)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
         FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit",
        record.execution_id,
        tenant_id,
        facts.conversation_id,
        facts.contact_id,
        record.trigger_message_id,
        record.provider,
        record.model,
        record.offline,
        serde_json::to_value(record).unwrap_or_default()
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
         WHERE conversation_id = $1 AND id <> $2 AND outcome <> 'running'
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
    actions: &[tools::TenantAction],
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
                let action = actions.iter().find(|a| Some(a.id) == action_id);
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
    let sealed = state
        .sealer
        .seal_json(&guard.ctx.vault, &vault_context(facts.conversation_id));
    sqlx::query!(
        "INSERT INTO conversation_vault (conversation_id, tenant_id, sealed) VALUES ($1, $2, $3)
         ON CONFLICT (conversation_id) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()",
        facts.conversation_id,
        tenant_id,
        sealed
    )
    .execute(&mut *tx)
    .await?;
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
    sqlx::query!(
        "UPDATE agent_execution SET outcome = $2, confidence = $3, record = $4, finished_at = now() WHERE id = $1",
        record.execution_id,
        outcome,
        confidence,
        serde_json::to_value(&record).unwrap_or_default()
    )
    .execute(&mut *tx)
    .await?;
    let mut event = AuditEvent::new("agent.executed", "conversation", facts.conversation_id).after(json!({
        "execution_id": record.execution_id, "trigger_message_id": message_id, "outcome": outcome,
        "reason": record.reason, "provider": record.provider, "model": record.model, "offline": record.offline,
        "confidence": confidence,
    }));
    event.execution_id = Some(record.execution_id);
    audit::record(
        &mut tx,
        &agent_source(tenant_id, record.execution_id),
        event,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub mod sqlx_history {
    pub struct Row {
        pub id: uuid::Uuid,
        pub direction: String,
        pub author_kind: String,
        pub body: String,
    }
}
