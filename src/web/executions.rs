//! The execution record viewer (AGT-8): one agent run in full, read through the agent domain's
//! own functions (the API's `GET /api/v1/executions/{id}` reads the same): the prompt as sent,
//! masked, with its placeholders marked; the model, provider and template hashes; the passages
//! retrieved with their scores; each tool call; the raw and parsed decision; the confidence and
//! its inputs against the tenant's threshold; every guardrail verdict; the outcome, timings and
//! the record's digest against the audit chain. A member allowed to reveal sees the values the
//! conversation's vault keeps behind the placeholders, and the reveal is audited.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde_json::Value;
use uuid::Uuid;

use super::inbox::readable;
use super::{render, Chrome};
use crate::agent::{self, ExecutionView};
use crate::app::AppState;
use crate::error::Result;
use crate::guardrails::parse_placeholder;
use crate::http::{Access, Api, Ctx, Path};
use crate::rbac::Permission;

pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    api.page(
        Method::GET,
        "/app/executions/{execution_id}",
        Requires(ExecutionsRead),
        show,
    )
    // A post, not a link: it is audited, and a prefetch or a crawler must not reveal anything.
    .page(
        Method::POST,
        "/app/executions/{execution_id}/reveal",
        Requires(ExecutionsReveal),
        reveal,
    )
}

/// A piece of masked text: plain, or a placeholder with the value behind it once revealed.
pub struct Part {
    pub text: String,
    pub placeholder: bool,
    pub value: String,
}

/// Masked text cut at its placeholders, so the page can mark each one.
pub struct Masked {
    pub parts: Vec<Part>,
}

impl Masked {
    fn new(text: &str, values: &HashMap<String, String>) -> Self {
        let mut parts = Vec::new();
        let mut plain_from = 0;
        let mut i = 0;
        while let Some(offset) = text[i..].find('[') {
            let at = i + offset;
            match parse_placeholder(text, at) {
                Some((placeholder, end)) => {
                    if at > plain_from {
                        parts.push(plain(&text[plain_from..at]));
                    }
                    let name = placeholder.to_string();
                    parts.push(Part {
                        value: values.get(&name).cloned().unwrap_or_default(),
                        text: name,
                        placeholder: true,
                    });
                    plain_from = end;
                    i = end;
                }
                None => i = at + 1,
            }
        }
        if plain_from < text.len() {
            parts.push(plain(&text[plain_from..]));
        }
        Masked { parts }
    }

    fn of(value: &Value, values: &HashMap<String, String>) -> Self {
        match value {
            Value::String(s) => Masked::new(s, values),
            Value::Null => Masked::new("", values),
            other => Masked::new(
                &serde_json::to_string_pretty(other).unwrap_or_default(),
                values,
            ),
        }
    }
}

fn plain(text: &str) -> Part {
    Part {
        text: text.to_string(),
        placeholder: false,
        value: String::new(),
    }
}

pub struct Message {
    pub role: String,
    pub content: Masked,
}

pub struct Round {
    pub number: usize,
    pub last: bool,
    pub messages: Vec<Message>,
}

pub struct Passage {
    pub title: String,
    pub article_href: String,
    pub chunk_id: String,
    pub score: String,
}

pub struct ToolCall {
    pub name: String,
    pub effect: String,
    pub arguments: Masked,
    pub result: Masked,
}

pub struct Input {
    pub name: &'static str,
    pub value: String,
    pub weight: String,
}

pub struct Verdict {
    pub stage: String,
    pub source: String,
    pub action: String,
    pub findings: Vec<String>,
    pub masked_text: Masked,
}

pub struct Pair {
    pub name: String,
    pub value: String,
}

#[derive(Template)]
#[template(path = "web/execution.html")]
struct ExecutionPage {
    chrome: Chrome,
    id: Uuid,
    conversation_href: String,
    outcome: String,
    reason: String,
    provider: String,
    model: String,
    offline: bool,
    embedding: String,
    started: String,
    finished: String,
    digest: String,
    /// `ok`, `mismatch` or `unchecked`.
    digest_state: &'static str,
    audit_href: String,
    templates: Vec<Pair>,
    rounds: Vec<Round>,
    passages: Vec<Passage>,
    tools: Vec<ToolCall>,
    raw_decision: Masked,
    parsed_decision: Masked,
    confidence: String,
    threshold: String,
    /// `above`, `below` or empty when either is unknown.
    against_threshold: &'static str,
    inputs: Vec<Input>,
    verdicts: Vec<Verdict>,
    timings: Vec<Pair>,
    usage: Vec<Pair>,
    provider_calls: Vec<Pair>,
    errors: Vec<String>,
    can_reveal: bool,
    revealed: bool,
    revealed_count: usize,
}

/// `GET /app/executions/{id}`: the record with placeholders only.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let chrome = Chrome::new(&state, &ctx, "executions").await?;
    let mut tx = ctx.begin(&state).await?;
    let view = agent::execution(&mut tx, id).await?;
    let sources = agent::run_sources(&mut tx, id).await?;
    tx.commit().await?;
    page(chrome, &ctx, view, sources, None)
}

/// `POST /app/executions/{id}/reveal`: the record with the vault's values beside its
/// placeholders; the agent domain audits the reveal in the same transaction that reads them.
pub async fn reveal(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let chrome = Chrome::new(&state, &ctx, "executions").await?;
    let mut tx = ctx.begin(&state).await?;
    let revealed = agent::reveal(&mut tx, &ctx, &state.sealer, id).await?;
    let sources = agent::run_sources(&mut tx, id).await?;
    tx.commit().await?;
    let values = revealed.values.into_iter().collect();
    page(chrome, &ctx, revealed.view, sources, Some(values))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> String {
    v.as_f64().map(|n| format!("{n:.3}")).unwrap_or_default()
}

fn pairs(v: &Value) -> Vec<Pair> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| Pair {
            name: k.replace('_', " "),
            value: text(v),
        })
        .collect()
}

fn page(
    chrome: Chrome,
    ctx: &Ctx,
    view: ExecutionView,
    sources: Vec<agent::RunSource>,
    values: Option<HashMap<String, String>>,
) -> Result<Response> {
    let revealed = values.is_some();
    let values = values.unwrap_or_default();
    let record = &view.record;
    let requests = record["requests"].as_array().cloned().unwrap_or_default();
    let rounds = requests
        .iter()
        .enumerate()
        .map(|(i, messages)| Round {
            number: i + 1,
            last: i + 1 == requests.len(),
            messages: messages
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let mut content = text(&m["content"]);
                    for call in m["tool_calls"].as_array().into_iter().flatten() {
                        content.push_str(&format!(
                            "\n→ {}({})",
                            text(&call["name"]),
                            text(&call["arguments"])
                        ));
                    }
                    Message {
                        role: text(&m["role"]),
                        content: Masked::new(&content, &values),
                    }
                })
                .collect(),
        })
        .collect();
    let passages = record["retrieval"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|hit| {
            let article = text(&hit["article_id"]);
            let source = sources.iter().find(|s| s.article_id.to_string() == article);
            Passage {
                title: source
                    .map(|s| s.title.clone())
                    .unwrap_or_else(|| "(an article deleted since)".to_string()),
                article_href: match source {
                    Some(s) if ctx.role.can(Permission::KnowledgeRead) => {
                        format!("/app/knowledge/{}", s.article_id)
                    }
                    _ => String::new(),
                },
                chunk_id: text(&hit["chunk_id"]),
                score: number(&hit["score"]),
            }
        })
        .collect();
    let tools = record["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|call| ToolCall {
            name: text(&call["name"]),
            effect: text(&call["effect"]),
            arguments: Masked::of(&call["arguments"], &values),
            result: Masked::of(&call["result"], &values),
        })
        .collect();
    let raw = record["responses"]
        .as_array()
        .and_then(|r| r.last())
        .map(|r| r["choices"][0]["message"]["content"].clone())
        .unwrap_or(Value::Null);
    let confidence = &record["confidence"];
    let threshold = record["parameters"]["confidence_threshold"].as_f64();
    let value = confidence["value"]
        .as_f64()
        .or(view.confidence.map(f64::from));
    let against_threshold = match (value, threshold) {
        (Some(v), Some(t)) if v >= t => "above",
        (Some(_), Some(_)) => "below",
        _ => "",
    };
    let weights = &confidence["weights"];
    let inputs = vec![
        Input {
            name: "Self-reported by the model",
            value: number(&confidence["self_reported"]),
            weight: number(&weights["self_reported"]),
        },
        Input {
            name: "Token probability",
            value: number(&confidence["token_probability"]),
            weight: number(&weights["logprob"]),
        },
        Input {
            name: "Retrieval certainty",
            value: match (
                number(&confidence["retrieval_certainty"]),
                number(&confidence["retrieval"]),
            ) {
                (c, r) if !c.is_empty() => format!("{c} (similarity {r})"),
                (_, r) => r,
            },
            weight: number(&weights["retrieval"]),
        },
    ];
    let verdicts = record["guardrails"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Verdict {
            stage: text(&v["stage"]),
            source: text(&v["source"]),
            action: text(&v["verdict"]["action"]),
            findings: v["verdict"]["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    format!(
                        "{} ({}, {})",
                        text(&f["rule_id"]),
                        text(&f["type"]),
                        text(&f["action"])
                    )
                })
                .collect(),
            masked_text: Masked::new(&text(&v["verdict"]["masked_text"]), &values),
        })
        .collect();
    let provider_calls = record["provider_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Pair {
            name: format!(
                "{} · {} {}",
                text(&c["kind"]),
                text(&c["provider"]),
                text(&c["model"])
            ),
            value: format!(
                "{} ms, {} attempt(s){}",
                text(&c["latency_ms"]),
                text(&c["attempts"]),
                match text(&c["error"]) {
                    e if e.is_empty() => String::new(),
                    e => format!(", failed: {e}"),
                }
            ),
        })
        .collect();
    let digest_state = match view.record_digest_ok {
        Some(true) => "ok",
        Some(false) => "mismatch",
        None => "unchecked",
    };
    let audit_href = match ctx.role.can(Permission::AuditRead) {
        true => format!(
            "/app/audit?{}",
            serde_urlencoded::to_string([
                ("entity_type", "conversation".to_string()),
                ("entity_id", view.conversation_id.to_string()),
                ("action", "agent.executed".to_string()),
            ])
            .unwrap_or_default()
        ),
        false => String::new(),
    };
    Ok(render(&ExecutionPage {
        id: view.id,
        conversation_href: match ctx.role.can(Permission::ConversationsRead) {
            true => format!("/app/conversations/{}", view.conversation_id),
            false => String::new(),
        },
        outcome: view.outcome.replace('_', " "),
        reason: text(&record["reason"]),
        provider: view.provider.clone(),
        model: view.model.clone(),
        offline: view.offline,
        embedding: match (&view.embedding_provider, &view.embedding_model) {
            (Some(p), Some(m)) => format!("{p} {m}"),
            _ => "the built-in embedder".to_string(),
        },
        started: readable(view.started_at),
        finished: view.finished_at.map(readable).unwrap_or_default(),
        digest: view.record_sha256.clone(),
        digest_state,
        audit_href,
        templates: record["templates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| Pair {
                name: text(&t["name"]),
                value: text(&t["sha256"]),
            })
            .collect(),
        rounds,
        passages,
        tools,
        raw_decision: Masked::of(&raw, &values),
        parsed_decision: Masked::of(&record["decision"], &values),
        confidence: value.map(|v| format!("{v:.3}")).unwrap_or_default(),
        threshold: threshold.map(|t| format!("{t:.3}")).unwrap_or_default(),
        against_threshold,
        inputs,
        verdicts,
        timings: pairs(&record["timings_ms"]),
        usage: pairs(&record["usage"]),
        provider_calls,
        errors: record["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect(),
        can_reveal: ctx.role.can(Permission::ExecutionsReveal) && !revealed,
        revealed,
        revealed_count: values.len(),
        chrome,
    }))
}
