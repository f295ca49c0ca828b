//! How a run reaches its decision: screen the customer's message, retrieve knowledge, converse
//! with the model through the tools (or answer offline), and check what it proposes.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use super::record::{millis, Record, RunOutcome};
use super::{sqlx_history, Facts, Final, Stop};
use crate::agent::decision::{self, Action, Decision, Weights};
use crate::agent::pipeline::{self, call_model, constant, Guard, GuardedRequest, Masked, Part};
use crate::agent::prompts::{TemplateUse, PROMPTS};
use crate::agent::provider::{ChatMessage, Provider};
use crate::agent::settings::AgentSettings;
use crate::agent::tools::{self, CallScope, ToolEffect};
use crate::guardrails::{schema, Verdict};
use crate::knowledge::{self, Hit};
use crate::reviews;

/// Below this similarity the offline responder does not quote a passage at all.
const OFFLINE_MIN_SCORE: f64 = 0.12;
const MAX_TOOL_ROUNDS: usize = 4;

pub(super) fn stopped(verdict: &Verdict, record: &mut Record, guard: &Guard) -> Final {
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
            outcome: RunOutcome::Blocked,
        },
        _ => Final::Handoff {
            reason: format!("guardrail:{}", record.reason),
            suggestion: None,
            tell_customer: verdict.safe_reply.clone(),
        },
    }
}

pub(super) async fn decide(
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
    // Searched for the question, not the greeting, name and details around it (placeholders
    // included: the masked text loses them alike).
    let embedded = embedder
        .embed_query(
            &knowledge::focus::question(&facts.body),
            Masked::from(message.clone()).narrowed(knowledge::focus::question),
        )
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
            passages.push(guard.as_data("knowledge", s));
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
    // A canary of this run's own: a draft holding it (or the instructions' wording) is
    // refused by the outbound stage.
    let (secret, canary) = pipeline::canary();
    guard.ctx.prompt = Some(secret);
    let system = pipeline::render(
        &PROMPTS.system,
        BTreeMap::from([
            ("canary", canary),
            ("data_boundary", guard.data_boundary()),
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
            Part::User(guard.as_data("customer_message", text))
        } else {
            Part::Assistant(text)
        });
    }
    parts.push(Part::User(guard.as_data("customer_message", message)));
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
pub(super) enum RequestProblem {
    /// No tenant action of that name (or of that material kind).
    Unknown,
    /// The arguments do not fit the action's schema.
    Invalid(String),
}

/// Checks a `request_action` decision against the tenant's actions and the action's schema
/// (with the real values the placeholders stand for, as the endpoint would get them).
pub(super) fn check_request(
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
pub(super) async fn converse(
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
                content: guard.as_data("tool_result", result),
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

pub(super) fn decide_on(
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
            outcome: RunOutcome::Replied,
        }),
    }
}

pub(super) fn non_empty(s: &str, fallback: &str) -> String {
    if s.trim().is_empty() {
        fallback.into()
    } else {
        s.to_string()
    }
}

/// The offline responder: no model. It quotes the best-matching passage, with the retrieval
/// similarity (raw, and as the tenant's retrieval scale maps it) as its confidence, and says so.
pub(super) fn offline(
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

pub(super) fn messages_json(messages: &[ChatMessage]) -> Value {
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
